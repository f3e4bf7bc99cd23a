#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot-time activation under systemd: a VM boots Debian's 6.1 kernel with
# systemd as PID 1 on a root file system with `make install`'s files,
# prldisk.service enabled and an /etc/prldisktab line for a two-layer disk
# with cbt.  The root is an overlay: the host's root (9p, read-only) below,
# an ext4 file system (a host file) above, holding the install and the disk.
# Two test units watch prldisk.service from either side:
#   prltest-check   after it started: the disk is active, udev made its
#                   by-prldisk link; it writes data, then powers off
#   prltest-witness ordered before it, so at shutdown it stops after it:
#                   no dm device or loop device may be left by then, and
#                   each image is closed (in_use clear) and cut to its end
# After poweroff the disk is read back from the ext4 file: the top is
# closed (in_use clear) and cut to its image end, holds the data, and its
# dirty bitmap is stored and trusted.
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-system-x86_64 qemu-img mkfs.ext4 debugfs busybox cpio systemctl \
	/lib/systemd/systemd

kver=$(ls -d /lib/modules/6.1.*/build 2>/dev/null | sort -V | tail -n 1 | cut -d/ -f4)
[ -n "$kver" ] && [ -r "/boot/vmlinuz-$kver" ] || skip "no 6.1 kernel and headers"
js() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# --- the upper layer of the guest's root: the install, the disk, the tab ---
U=$T/upper/root
make -C "$SRC" --no-print-directory KVER="$kver" DESTDIR="$U" PREFIX=/usr install \
	> install.log 2>&1 || { tail -n 30 install.log >&2; fail "make install"; }
# The host's /lib is a link to usr/lib (merged /usr); a real lib/ in the
# upper layer would hide it.
UM=$U/lib/modules
if [ -L /lib ]; then
	mkdir -p "$U/usr/lib" && mv "$UM" "$U/usr/lib/" && rmdir "$U/lib" &&
		ln -s usr/lib "$U/lib"
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
D=$U/var/lib/prldisks/d
mkdir -p "${D%/*}"
"$PRLDISK" create "$D" --size 64M > /dev/null
"$PRLDISK" snapshot "$D" > /dev/null
printf '# name\tdescriptor\toptions\nd\t/var/lib/prldisks/d\tcbt\n' > "$U/etc/prldisktab"

mkdir -p "$U/etc/prltest"
head -c 1M /dev/urandom > "$U/etc/prltest/data"
cat > "$U/etc/prltest/check.sh" <<'EOF'
#!/bin/sh
exec > /dev/console 2>&1
echo "PRLTEST-UNIT: $(systemctl is-active prldisk.service)"
echo "PRLTEST-ACTIVE: $(prldisk tab list --json | tr -d '\n')"
echo "PRLTEST-LINK: $(readlink -f /dev/disk/by-prldisk/d)"
dd if=/etc/prltest/data of=/dev/disk/by-prldisk/d bs=64k seek=16 oflag=direct \
	conv=fsync status=none && echo "PRLTEST-WROTE"
EOF
cat > "$U/etc/prltest/witness.sh" <<'EOF'
#!/bin/sh
dm=$(dmsetup info -c --noheadings -o name 2>/dev/null | grep -v 'No devices' | tr '\n' ' ')
echo "PRLTEST-STOPPED: dm=[$dm] loop=[$(losetup -n -O NAME | tr '\n' ' ')]" > /dev/console
echo "PRLTEST-CLOSED: $(prldisk info --json /var/lib/prldisks/d | tr -d ' \n')" > /dev/console
EOF
S=$U/etc/systemd/system
cat > "$S/prltest.target" <<'EOF'
[Unit]
Description=dm-parallels boot test
Requires=basic.target
After=basic.target
Wants=prltest-check.service prltest-witness.service
EOF
cat > "$S/prltest-check.service" <<'EOF'
[Unit]
Description=dm-parallels boot test: the disk is up
After=prldisk.service local-fs.target systemd-udev-settle.service
Wants=systemd-udev-settle.service
SuccessAction=poweroff
FailureAction=poweroff
[Service]
Type=oneshot
ExecStart=/bin/sh /etc/prltest/check.sh
EOF
cat > "$S/prltest-witness.service" <<'EOF'
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
EOF
# No journal: the guest cannot unmount it (it sits under the overlay), so
# the host reads what sync() left on it.
truncate -s 1G upper.img
mkfs.ext4 -q -O ^has_journal -d "$T/upper" upper.img

# --- the initramfs: mount the overlay root, switch to systemd ---------------
I=$T/initramfs
mkdir -p "$I"/{bin,dev,proc,lower,upper,newroot,lib/modules}
cp "$(command -v busybox)" "$I/bin/busybox"
for m in virtio_pci virtio_blk ext4 9pnet_virtio 9p overlay; do
	modprobe -S "$kver" --show-depends "$m"
done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' > mods
while read -r ko; do
	name=${ko##*/} && name=${name%.ko*}.ko
	case $ko in
	*.xz) xz -dc "$ko" ;; *.zst) zstd -dc "$ko" ;; *.gz) gzip -dc "$ko" ;; *) cat "$ko" ;;
	esac > "$I/lib/modules/$name"
	echo "$name" >> "$I/lib/modules/order"
done < mods
cat > "$I/init" <<EOF
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
EOF
chmod 755 "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet) > initrd.img

timeout 400 qemu-system-x86_64 -machine q35,accel=tcg -smp 2 -m 1536 -nodefaults \
	-display none -serial stdio -no-reboot \
	-kernel "/boot/vmlinuz-$kver" -initrd initrd.img \
	-append "console=ttyS0 panic=-1 systemd.unit=prltest.target systemd.show_status=1" \
	-drive file=upper.img,format=raw,if=virtio -device virtio-rng-pci \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	< /dev/null > console.log 2>&1 || true
tr -d '\r' < console.log > console.txt
grep -a PRLTEST console.txt >&2 ||
	fail "the test units did not run: $(grep -a -i -e prldisk -e panic -e failed -e error console.txt | tail -n 15)"

# --- while it ran, and at shutdown ------------------------------------------
line() { sed -n "s/^PRLTEST-$1: //p" console.txt | tail -n 1; }
expect_eq "$(line UNIT)" active "prldisk.service after boot"
expect_eq "$(line ACTIVE | js '[(e["name"], e["active"]) for e in d]')" "[('d', True)]" \
	"prldisk tab list in the guest"
case $(line LINK) in /dev/dm-*) ;; *) fail "no /dev/disk/by-prldisk/d link: '$(line LINK)'" ;; esac
grep -aqx PRLTEST-WROTE console.txt || fail "the write through the link failed"
expect_eq "$(line STOPPED)" "dm=[] loop=[]" "left after prldisk.service stopped"
expect_eq "$(line CLOSED | js '[(e["image"]["in_use"], e["image"]["image_end"] == e["image"]["file_size"]) for e in d["images"]]')" \
	"[(False, True), (False, True)]" "each layer after prldisk.service stopped: (in_use, cut)"

# --- the disk, read back from the guest's file system -----------------------
debugfs -R "rdump /root/var/lib/prldisks/d ." upper.img 2> /dev/null
[ -r d/DiskDescriptor.xml ] || fail "the disk is not in the guest's file system"
top=d/$("$PRLDISK" info --json d | js '[e["file"] for e in d["images"] if e["top"]][0]')
expect_eq "$("$PRLDISK" info --json "$top" | js 'd["in_use"], d["image_end"] == d["file_size"]')" \
	"False True" "the top, closed and cut"
"$PRLDISK" check d > check.log 2>&1 || { cat check.log >&2; fail "prldisk check"; }
# QEMU 7.2 counts the extension's clusters (its own and the bitmap's) as
# leaks; nothing else may be one.
rc=0
qemu-img check -f parallels "$top" > qcheck.log 2>&1 || rc=$?
ext=$("$PRLDISK" info --json "$top" |
	js '1 + sum(f.get("l1_size", 0) for f in d["format_extension"]["features"])')
leaked=$(sed -n 's/^\([0-9]*\) leaked clusters.*/\1/p' qcheck.log)
[ "$rc ${leaked:-0}" = "3 $ext" ] || { cat qcheck.log >&2; fail "qemu-img check: exit $rc"; }
qemu-img convert -f parallels -O raw "$top" top.raw
cmp -n 1048576 "$U/etc/prltest/data" <(dd if=top.raw bs=64k skip=16 count=16 status=none) ||
	fail "the data written in the guest is not in the top"
expect_eq "$("$PRLDISK" bitmap show --json d | js 'd["trusted"], d["changed"] > 0')" "True True" \
	"the top's dirty bitmap"
