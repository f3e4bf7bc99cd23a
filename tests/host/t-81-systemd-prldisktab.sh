#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot-time activation under systemd: a VM boots Debian's kernel (6.1, then
# 6.12, each that is installed with headers) with systemd as PID 1 on a
# root file system with `make install`'s files, prldisk.service enabled,
# an /etc/prldisktab line for a two-layer disk with cbt and ext4 on it, and
# an /etc/fstab line mounting it through its udev link.  The root is an
# overlay: the host's root (9p, read-only) below, an ext4 file system (a
# host file) above, holding all of that.
# Two test units watch prldisk.service from either side:
#   prltest-check   after boot: the unit is active (the installed one), the
#                   disk is open (in_use) and mounted from the fstab line;
#                   it writes a file there, then powers off
#   prltest-witness ordered before it, so at shutdown it stops after it:
#                   the unit stopped with success, no dm or loop device is
#                   left, each image is closed (in_use clear), cut to its end
# After poweroff the disk is read back from the ext4 file: the file is in
# its (cleanly unmounted) file system and the top's dirty bitmap is stored.
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-system-x86_64 qemu-img mkfs.ext4 e2fsck debugfs busybox cpio systemctl \
	/lib/systemd/systemd python3 depmod modprobe

# Each kernel in a run of its own, in a folder of its own.
if [ -z "${T81_KVER-}" ]; then
	ran=
	for series in 6.1 6.12; do
		k=$(ls -d /lib/modules/$series.*/build 2>/dev/null | sort -V | tail -n 1 | cut -d/ -f4)
		[ -n "$k" ] && [ -r "/boot/vmlinuz-$k" ] || { note "no $series kernel and headers"; continue; }
		note "--- $k"
		mkdir "$T/$k"
		(cd "$T/$k" && T=$T/$k T81_KVER=$k bash "$0") || fail "on $k (above)"
		ran=1
	done
	[ -n "$ran" ] || skip "no 6.1 or 6.12 kernel with headers"
	exit 0
fi
kver=$T81_KVER
js() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# --- the upper layer of the guest's root: the install, the disk, the tab ---
U=$T/upper/root
make -C "$SRC" --no-print-directory KVER="$kver" DESTDIR="$U" PREFIX=/usr install \
	> install.log 2>&1 || { tail -n 30 install.log >&2; fail "make install"; }
# The host's /lib is a link to usr/lib (merged /usr); a real lib/ in the
# upper layer would hide it.
UM=$U/lib/modules
if [ -L /lib ]; then
	{ mkdir -p "$U/usr/lib" && mv "$UM" "$U/usr/lib/" && rmdir "$U/lib" &&
		ln -s usr/lib "$U/lib"; } || fail "moving the upper layer's lib/ into usr/lib"
	UM=$U/usr/lib/modules
fi
# depmod, as make install leaves it to the system: here on the host, over
# a tree that links the kernel's own modules (the guest's 9p is slow).
M=$T/depmod/lib/modules/$kver
mkdir -p "$M"
ln -s "/lib/modules/$kver/kernel" "$M/kernel"
cp "/lib/modules/$kver"/modules.order "/lib/modules/$kver"/modules.builtin* "$M/"
cp -r "$UM/$kver/updates" "$M/"
depmod -b "$T/depmod" "$kver" || fail "depmod"
cp "$M"/modules.* "$UM/$kver/"
systemctl --root="$U" enable prldisk.service > enable.log 2>&1 ||
	{ cat enable.log >&2; fail "systemctl enable prldisk.service"; }

# The disk: ext4 with a file, in the base image; a snapshot on top.
D=$U/var/lib/prldisks/d
mkdir -p "${D%/*}" fs "$U/mnt/prl"
echo "from the host" > fs/before
truncate -s 64M fs.raw
mkfs.ext4 -q -d fs fs.raw
"$PRLDISK" create "$D" --size 64M > /dev/null
qemu-img convert -n -f raw -O parallels fs.raw "$D/root.hds"
"$PRLDISK" snapshot "$D" > /dev/null
printf '# name\tdescriptor\toptions\nd\t/var/lib/prldisks/d\tcbt\n' > "$U/etc/prldisktab"
# Our own fstab and crypttab, not the host's; a tmpfs /tmp and a volatile
# journal, so that the guest does not copy the host's /tmp and journal up.
printf '%s\n' '/dev/disk/by-prldisk/d /mnt/prl ext4 defaults 0 0' \
	'tmpfs /tmp tmpfs defaults 0 0' > "$U/etc/fstab"
: > "$U/etc/crypttab"
mkdir -p "$U/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\n' > "$U/etc/systemd/journald.conf.d/prltest.conf"
python3 -c 'import uuid; print(uuid.uuid4().hex)' > "$U/etc/machine-id"

# The test units.
mkdir -p "$U/etc/prltest"
head -c 1M /dev/urandom > "$U/etc/prltest/data"
cat > "$U/etc/prltest/check.sh" <<'END'
#!/bin/sh
# To a file: systemd's status lines share the console.
exec >> /var/log/prltest.log 2>&1
P=/usr/sbin/prldisk
echo "PRLTEST-UNIT: $(systemctl is-active prldisk.service) $(systemctl show -p FragmentPath --value prldisk.service)"
echo "PRLTEST-ACTIVE: $($P tab list --json | tr -d ' \n')"
echo "PRLTEST-OPEN: $($P info --json /var/lib/prldisks/d | tr -d ' \n')"
echo "PRLTEST-MOUNT: $(findmnt -n -o SOURCE,FSTYPE /mnt/prl) $(readlink -f /dev/disk/by-prldisk/d)"
cp /etc/prltest/data /mnt/prl/data && sync && echo "PRLTEST-WROTE: $(cat /mnt/prl/before)"
END
cat > "$U/etc/prltest/witness.sh" <<'END'
#!/bin/sh
exec >> /var/log/prltest.log 2>&1
dm=$(dmsetup info -c --noheadings -o name 2>&1) || dm="failed: $dm"
[ "$dm" != "No devices found" ] || dm=
lo=$(losetup -n -O NAME 2>&1) || lo="failed: $lo"
# shellcheck disable=SC2086 # one line
echo "PRLTEST-STOPPED: $(systemctl show -p Result --value prldisk.service)" \
	"dm=[$(echo $dm)] loop=[$(echo $lo)]"
echo "PRLTEST-CLOSED: $(/usr/sbin/prldisk info --json /var/lib/prldisks/d | tr -d ' \n')"
END
S=$U/etc/systemd/system
cat > "$S/prltest.target" <<'END'
[Unit]
Description=dm-parallels boot test
Requires=basic.target
After=basic.target
Wants=prltest-check.service prltest-witness.service
END
cat > "$S/prltest-check.service" <<'END'
[Unit]
Description=dm-parallels boot test: the disk is up
After=prldisk.service local-fs.target
SuccessAction=poweroff
FailureAction=poweroff
[Service]
Type=oneshot
ExecStart=/bin/sh /etc/prltest/check.sh
END
cat > "$S/prltest-witness.service" <<'END'
[Unit]
Description=dm-parallels boot test: the disk went down first
DefaultDependencies=no
Before=prldisk.service shutdown.target
Conflicts=shutdown.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/sh /etc/prltest/witness.sh
END
# No journal: the guest cannot unmount it (it sits under the overlay), so
# the host reads what sync() left on it.
truncate -s 1G upper.img
mkfs.ext4 -q -O ^has_journal -d "$T/upper" upper.img

# --- the initramfs: mount the overlay root, switch to systemd ---------------
I=$T/initramfs
"$SRC/tests/tools/initramfs-base.sh" "$kver" "$I" virtio_pci virtio_blk ext4 9pnet_virtio 9p overlay
mkdir -p "$I"/{lower,upper,newroot}
cat > "$I/init" <<END
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in \$(cat /lib/modules/order); do insmod /lib/modules/\$m; done
i=0
until mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower; do
	i=\$((i + 1)); [ \$i -lt 50 ] || poweroff -f; sleep 0.1
done
i=0
while [ ! -b /dev/vda ] && [ \$i -lt 50 ]; do i=\$((i + 1)); sleep 0.1; done
mount -t ext4 /dev/vda /upper && mkdir -p /upper/work &&
mount -t overlay -o lowerdir=/lower,upperdir=/upper/root,workdir=/upper/work root /newroot ||
	poweroff -f
# A VM, not the container the host root comes from (systemd would believe
# that, and ignore the kernel command line).
rm -f /newroot/.dockerenv
umount /proc /dev
exec switch_root /newroot /lib/systemd/systemd
END
chmod 755 "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet) > initrd.img

cp upper.img upper-clean.img
boot() {
timeout 400 qemu-system-x86_64 -machine q35,accel=tcg -smp 2 -m 1536 -nodefaults \
	-display none -serial stdio -no-reboot \
	-kernel "/boot/vmlinuz-$kver" -initrd initrd.img \
	-append "console=ttyS0 panic=-1 loglevel=4 systemd.unit=prltest.target systemd.show_status=1" \
	-drive file=upper.img,format=raw,if=virtio -device virtio-rng-pci \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	< /dev/null > console.log 2>&1 || true
}
boot
# 6.12 under TCG now and then dies early in boot on an int3 left by its own
# code patching (nothing of ours has run): boot that one again, once.
if ! grep -aq 'Reached target' console.log && grep -aq 'Kernel panic' console.log; then
	note "the kernel panicked while booting: booting again"
	mv console.log console-boot1.log
	cp upper-clean.img upper.img
	boot
fi
debugfs -R "cat /root/var/log/prltest.log" upper.img > units.log 2> /dev/null || true
grep '^PRLTEST' units.log >&2 ||
	fail "the test units did not run: $(grep -a -i -e prldisk -e panic -e failed -e error console.log | tail -n 15)"

# --- while it ran, and at shutdown ------------------------------------------
line() { sed -n "s/^PRLTEST-$1: //p" units.log | tail -n 1; }
layers() { # layers EXPR: EXPR for each layer's image, from prldisk info --json
	js "[$1 for i in [e['image'] for e in d['images']]]"
}
case $(line UNIT) in	# the installed unit, not one the host has elsewhere
"active /usr/lib/systemd/system/prldisk.service"|"active /lib/systemd/system/prldisk.service") ;;
*) fail "prldisk.service after boot: '$(line UNIT)'" ;;
esac
expect_eq "$(line ACTIVE | js '[(e["name"], e["active"]) for e in d]')" "[('d', True)]" \
	"prldisk tab list in the guest"
expect_eq "$(line OPEN | layers "i['in_use']")" "[False, True]" "in_use while active (base, top)"
case $(line MOUNT) in
"/dev/mapper/d ext4 /dev/dm-"*) ;;
*) fail "/mnt/prl is not the disk, mounted through its link: '$(line MOUNT)'" ;;
esac
expect_eq "$(line WROTE)" "from the host" "the file system's old file, read in the guest"
expect_eq "$(line STOPPED)" "success dm=[] loop=[]" "after prldisk.service stopped"
expect_eq "$(line CLOSED | layers "(i['in_use'], i['image_end'] == i['file_size'])")" \
	"[(False, True), (False, True)]" "each layer after prldisk.service stopped: (in_use, cut)"

# --- the disk, read back from the guest's file system -----------------------
debugfs -R "rdump /root/var/lib/prldisks/d ." upper.img 2> /dev/null
[ -r d/DiskDescriptor.xml ] || fail "the disk is not in the guest's file system"
top=d/$("$PRLDISK" info --json d | js '[e["file"] for e in d["images"] if e["top"]][0]')
"$PRLDISK" check d > check.log 2>&1 || { cat check.log >&2; fail "prldisk check"; }
# QEMU 7.2 counts the extension's clusters (its own and the bitmap's) as
# leaks; nothing else may be one.
rc=0
qemu-img check -f parallels "$top" > qcheck.log 2>&1 || rc=$?
ext=$("$PRLDISK" info --json "$top" |
	js '1 + sum(f.get("l1_size", 0) for f in d["format_extension"]["features"])')
leaked=$(sed -n 's/^\([0-9]*\) leaked clusters.*/\1/p' qcheck.log)
case "$rc ${leaked:-0}" in
"0 0"|"3 $ext") ;;
*) cat qcheck.log >&2; fail "qemu-img check: exit $rc" ;;
esac
# The file system, through QEMU: unmounted cleanly, with the guest's file.
qemu-img convert -O raw --image-opts \
	"driver=parallels,file.filename=$top,backing.driver=parallels,backing.file.filename=d/root.hds" \
	flat.raw || fail "QEMU cannot read the chain"
e2fsck -fn flat.raw > fsck.log 2>&1 || { cat fsck.log >&2; fail "e2fsck of the disk"; }
debugfs -R "dump /data data.out" flat.raw 2> /dev/null
cmp "$U/etc/prltest/data" data.out || fail "the file written in the guest is not on the disk"
expect_eq "$("$PRLDISK" bitmap show --json d | js 'd["trusted"], d["changed"] > 0')" "True True" \
	"the top's dirty bitmap"
