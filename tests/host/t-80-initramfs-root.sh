#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# A VM boots with its root file system on a Parallels disk that the
# initramfs-tools hook and local-top script (userspace/system/initramfs)
# activate: mkinitramfs builds an initramfs with them for Debian's 6.1
# kernel, from a prldisktab line "root /disks/root initramfs,source=/dev/vda".
# /dev/vda is an ext4 file system holding the disk (DiskDescriptor.xml and
# root.hds, a busybox root file system written into it by QEMU).  The
# guest's /sbin/init prints where / is mounted and writes a file; after the
# VM powers off, that file is read back from the image (through QEMU).
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd mkinitramfs qemu-system-x86_64 qemu-img mkfs.ext4 debugfs busybox

kver=$(ls -d /lib/modules/6.1.*/build 2>/dev/null | sort -V | tail -n 1 | cut -d/ -f4)
[ -n "$kver" ] && [ -r "/boot/vmlinuz-$kver" ] || skip "no 6.1 kernel and headers"

# The module for that kernel, built apart from the repo's build.
mkdir mod
cp -r "$SRC/Kbuild" "$SRC/kernel" mod/
make -s -C "/lib/modules/$kver/build" M="$T/mod" CONFIG_DEBUG_INFO_BTF_MODULES= modules \
	> mod.log 2>&1 || { tail -n 20 mod.log >&2; fail "module build"; }

# The root file system: busybox, and an init that reports and powers off.
mkdir -p rootfs/bin rootfs/sbin rootfs/etc rootfs/proc rootfs/sys rootfs/dev rootfs/run
cp "$(command -v busybox)" rootfs/bin/busybox
for c in sh mount cat echo sync poweroff awk; do ln -s busybox "rootfs/bin/$c"; done
echo "marker-$$" > rootfs/etc/marker
cat > rootfs/sbin/init <<'EOF'
#!/bin/sh
mount -t proc proc /proc
echo "PRLDISK-ROOT: $(cat /etc/marker) on $(awk '$2 == "/" { print $1 }' /proc/mounts)" > /dev/console
echo "written by the guest" > /from-guest
sync
poweroff -f
EOF
chmod 755 rootfs/sbin/init
truncate -s 64M fs.raw
mkfs.ext4 -q -d rootfs fs.raw

# The Parallels disk, on the store file system the initramfs mounts.
mkdir -p store/disks
"$PRLDISK" create store/disks/root --size 64M > /dev/null
qemu-img convert -n -f raw -O parallels fs.raw store/disks/root/root.hds
"$PRLDISK" check store/disks/root > /dev/null || fail "the disk is not sound"
truncate -s 512M store.img
mkfs.ext4 -q -d store store.img

# The initramfs: Debian's configuration, a short module list, our scripts.
mkdir -p conf/hooks conf/scripts/local-top conf/conf.d
sed 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' \
	/etc/initramfs-tools/initramfs.conf > conf/initramfs.conf
printf '%s\n' virtio_pci virtio_blk ext4 > conf/modules
cp "$SRC/userspace/system/initramfs/hook" conf/hooks/prldisk
cp "$SRC/userspace/system/initramfs/local-top" conf/scripts/local-top/prldisk
# Comments, a later-boot line, and no newline at the end, as prldisk tab takes.
printf '# early disks\nlater /disks/none cbt\nroot\t/disks/root\tinitramfs,source=/dev/vda#the root' > prldisktab
PRLDISK=$PRLDISK PRLDISK_MODULE=$T/mod/dm-parallels.ko PRLDISKTAB=$T/prldisktab \
	mkinitramfs -d conf -o initrd.img "$kver" > mkinitramfs.log 2>&1 ||
	{ tail -n 20 mkinitramfs.log >&2; fail "mkinitramfs"; }
lsinitramfs initrd.img > contents
for f in sbin/prldisk etc/prldisktab scripts/local-top/prldisk \
	"lib/modules/$kver/updates/dm-parallels.ko"; do
	grep -qx "$f" contents || grep -qx "usr/$f" contents || fail "$f is not in the initramfs"
done

timeout 300 qemu-system-x86_64 -machine q35,accel=tcg -smp 2 -m 1024 -nodefaults \
	-display none -serial stdio -no-reboot \
	-kernel "/boot/vmlinuz-$kver" -initrd initrd.img \
	-append "console=ttyS0 root=/dev/mapper/root rw panic=-1" \
	-drive file=store.img,format=raw,if=virtio < /dev/null > console.log 2>&1 || true
grep -a 'PRLDISK-ROOT' console.log >&2 ||
	fail "the guest did not run from the disk: $(grep -a -i -e prldisk -e panic -e 'Gave up' -e error console.log | tail -n 15)"
grep -aq "PRLDISK-ROOT: marker-$$ on /dev/mapper/root" console.log ||
	fail "/ was not the Parallels disk"

# What the guest wrote is in the image.
debugfs -R "dump /disks/root/root.hds after.hds" store.img 2> /dev/null
qemu-img convert -f parallels -O raw after.hds after.raw
expect_eq "$(debugfs -R 'cat /from-guest' after.raw 2> /dev/null)" "written by the guest" \
	"the guest's file, read from the image"
