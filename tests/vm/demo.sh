#!/bin/bash
# The demo (make demo, tests/demo.sh), run inside the VM: a real Parallels
# disk made by Debian's ploop, with an ext4 filesystem and one snapshot,
# activated as a chain of `parallels` tables, read, then written through
# the top, and read back by QEMU.  Prints what it does as it goes.
set -euo pipefail
. "$SRC/tests/vm/lib.sh"

say() { printf '\n==> %s\n' "$*"; }
W=$T/disk
mkdir -p "$W" "$T/tree1" "$T/mnt"

say "Make a 64 MiB Parallels disk with Debian's ploop"
echo "(ploop's complaint about its kernel module is expected: only its offline commands are used)"
(cd "$W" && ploop_cmd init -s 64M -t none root.hds)

say "Put an ext4 filesystem with a few files on it (written by QEMU)"
echo "version 1: written before the snapshot" > "$T/tree1/hello.txt"
seq 1 20000 > "$T/tree1/numbers.txt"
truncate -s 64M "$T/fs1.raw"
mkfs.ext4 -q -F -d "$T/tree1" "$T/fs1.raw"
qemu-img convert -n -f raw -O parallels "$T/fs1.raw" "$W/root.hds"

say "Take a ploop snapshot: root.hds becomes read-only, a new top delta appears"
(cd "$W" && ploop_cmd snapshot DiskDescriptor.xml)
top=$(ls "$W"/root.hds.\{*\})
echo "top delta: ${top##*/}"

say "Change the filesystem in the snapshot (QEMU writes into the top delta)"
cp "$T/fs1.raw" "$T/fs2.raw"
echo "version 2: written after the snapshot" > "$T/v2.txt"
debugfs -w -R "rm hello.txt" "$T/fs2.raw" >/dev/null 2>&1
debugfs -w -R "write $T/v2.txt hello.txt" "$T/fs2.raw" >/dev/null 2>&1
mapfile -t writes < <(python3 "$SRC/tests/demo/write-diff.py" "$T/fs1.raw" "$T/fs2.raw")
qemu_cmds=()
for w in "${writes[@]}"; do qemu_cmds+=(-c "$w"); done
echo "${#writes[@]} changed 64 KiB chunks"
qemu-io --image-opts "${qemu_cmds[@]}" \
	"driver=parallels,file.filename=$top,backing.driver=parallels,backing.file.filename=$W/root.hds" \
	>/dev/null
sha256sum "$W"/root.hds* > "$T/sums.before"

say "Activate the chain with dmsetup: root.hds below, the top delta above"
size=$(( $(stat -c %s "$T/fs1.raw") / 512 ))
lroot=$(loop_ro "$W/root.hds")
ltop=$(loop_ro "$top")
dm_create demo-root "0 $size parallels $lroot -" --readonly
dm_create demo "0 $size parallels $ltop /dev/mapper/demo-root" --readonly
dmsetup table | grep demo
echo "status: $(dmsetup status demo)"

say "Use it: fsck, mount, read the files"
e2fsck -fn /dev/mapper/demo
mount -o ro,noload /dev/mapper/demo "$T/mnt"
ls -l "$T/mnt"
cat "$T/mnt/hello.txt"
got=$(cat "$T/mnt/hello.txt")
umount "$T/mnt"
[ "$got" = "version 2: written after the snapshot" ] || fail "snapshot content wrong"
cmp /dev/mapper/demo "$T/fs2.raw" && echo "the device equals the snapshot's filesystem byte for byte"

say "The base image alone still shows the state before the snapshot"
# The top holds its lower device open exclusively: remove the top first.
dm_remove demo
mount -o ro,noload /dev/mapper/demo-root "$T/mnt"
cat "$T/mnt/hello.txt"
got=$(cat "$T/mnt/hello.txt")
umount "$T/mnt"
[ "$got" = "version 1: written before the snapshot" ] || fail "base content wrong"

say "Deactivate top-down; the images are untouched"
dm_remove_all
losetup -d "$ltop"
sha256sum -c --quiet "$T/sums.before" && echo "image files unchanged (sha256)"

say "Write: activate the top delta read-write over the read-only base"
truncate -s 256M "$top"		# room for the loop device to grow into
ltop=$(loop_rw "$top")
dm_create demo-root "0 $size parallels $lroot -" --readonly
dm_create demo "0 $size parallels $ltop /dev/mapper/demo-root"
mount /dev/mapper/demo "$T/mnt"
echo "version 3: written through dm-parallels" > "$T/mnt/hello.txt"
cp "$T/mnt/numbers.txt" "$T/mnt/numbers-copy.txt"
umount "$T/mnt"
e2fsck -fn /dev/mapper/demo >/dev/null && echo "e2fsck: clean"
echo "status: $(dmsetup status demo)"
end=$(dmsetup status demo | awk '{ print $6 }')
dm_remove_all
losetup -d "$ltop"
truncate -s $((end * 512)) "$top"
echo "top delta truncated to $((end * 512)) bytes"
qemu-img check -f parallels "$top"
sha256sum -c --quiet <(grep 'root.hds$' "$T/sums.before") && echo "base image unchanged (sha256)"

say "QEMU reads what we wrote"
qemu-img convert --image-opts -O raw \
	"driver=parallels,file.filename=$top,backing.driver=parallels,backing.file.filename=$W/root.hds" \
	"$T/fs3.raw"
e2fsck -fn "$T/fs3.raw" >/dev/null && echo "e2fsck of QEMU's view: clean"
debugfs -R "cat hello.txt" "$T/fs3.raw" 2>/dev/null
got=$(debugfs -R "cat hello.txt" "$T/fs3.raw" 2>/dev/null)
[ "$got" = "version 3: written through dm-parallels" ] || fail "QEMU does not see the write"
say "Demo finished"
