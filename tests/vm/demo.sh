#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The demo (make demo, tests/demo.sh), run inside the VM: a container's root
# file system on a real Parallels disk.  Debian's ploop makes the disk;
# prldisk activates it through dm-parallels, a busybox root file system goes
# on it, a command runs in it (chroot), an online snapshot is taken while it
# is mounted, the container is changed, and prldisk switch rolls it back.
# Changed block tracking tells what a backup must copy; QEMU and ploop read
# the images afterwards.  Prints what it does as it goes, and fails on any
# surprise (it is also the test t-90-demo).
set -euo pipefail
. "$SRC/tests/vm/lib.sh"

P=$SRC/userspace/prldisk
say() { printf '\n==> %s\n' "$*"; }
run() { echo "# $*"; "$@"; }
W=$T/ct101
M=$T/root
at_exit "cd / && umount -l $M 2>/dev/null; $P deactivate ct101 >/dev/null 2>&1"
mkdir -p "$W" "$M"

say "Make a 256 MiB Parallels disk with Debian's ploop"
echo "(ploop's complaint about its kernel module is expected: only its offline commands are used)"
(cd "$W" && ploop_cmd init -s 256M -t none root.hds)
run "$P" info "$W"

say "Activate it with prldisk (dm-parallels), tracking changed blocks"
run "$P" activate "$W" --name ct101 --cbt

say "Put a root file system on it: ext4 and busybox"
mkfs.ext4 -q -E nodiscard -L ct101 /dev/mapper/ct101
mount /dev/mapper/ct101 "$M"
mkdir -p "$M"/{bin,dev,etc,tmp,var/log}
mknod -m 666 "$M/dev/null" c 1 3
mknod -m 444 "$M/dev/urandom" c 1 9
cp /bin/busybox "$M/bin/"
chroot "$M" /bin/busybox --install -s /bin
echo "ct101" > "$M/etc/hostname"
echo "release 1" > "$M/etc/app-release"
run chroot "$M" /bin/sh -c 'echo "hello from $(cat /etc/hostname), $(cat /etc/app-release), $(ls /bin | wc -l) commands"'
sync

say "Snapshot it online, while the container's file system is mounted"
snap=$("$P" snapshot "$W" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot"])')
echo "snapshot $snap"
run "$P" status ct101

say "Upgrade the container (and break it a little)"
chroot "$M" /bin/sh -c 'echo "release 2" > /etc/app-release; rm /bin/vi; dd if=/dev/urandom of=/var/log/big bs=1M count=8 2>/dev/null'
run chroot "$M" /bin/sh -c 'echo "now: $(cat /etc/app-release), vi: $(ls /bin/vi 2>&1)"'
umount "$M"
e2fsck -fn /dev/mapper/ct101 > /dev/null && echo "e2fsck: clean"
run "$P" deactivate ct101

say "What changed since tracking started (for an incremental backup)"
"$P" bitmap show "$W" | head -n 4
changed=$("$P" bitmap show --json "$W" | python3 -c 'import json,sys; print(json.load(sys.stdin)["changed"])')
[ "$changed" -gt 0 ] || fail "the bitmap shows no change"

say "Roll back to the snapshot with prldisk switch"
run "$P" switch "$W" "$snap"
run "$P" activate "$W" --name ct101
mount /dev/mapper/ct101 "$M"
out=$(chroot "$M" /bin/sh -c 'echo "$(cat /etc/app-release) vi=$(test -e /bin/vi && echo yes || echo no) big=$(test -e /var/log/big && echo yes || echo no)"')
echo "after the rollback: $out"
[ "$out" = "release 1 vi=yes big=no" ] || fail "rollback did not restore the snapshot: $out"
umount "$M"
run "$P" deactivate ct101

say "The images are sound for QEMU and ploop"
run "$P" check "$W"
for f in "$W"/root.hds*; do
	qemu-img check -q -f parallels "$f" 2>/dev/null || [ $? -eq 3 ] ||
		fail "qemu-img check $f"	# 3: the bitmap's clusters, QEMU calls leaks
done
echo "qemu-img check: no corruption"
# ploop 1.15 predates the "closed v2.1" in_use value the target writes
# where it stores a dirty bitmap, as here (it calls anything but 0 dirty):
# check a copy that says 0, its "closed".
cp --sparse=never "$W/root.hds" "$T/root-copy.hds"
printf '\0\0\0\0' | dd of="$T/root-copy.hds" bs=1 seek=44 conv=notrunc status=none
ploop_cmd check -f "$T/root-copy.hds" > "$T/ploop-check.txt" 2>&1 ||
	fail "ploop check: $(tail -n 3 "$T/ploop-check.txt")"
echo "ploop check -f root.hds (in_use read as 0): clean"
say "Demo finished"
