#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# prldisk resize and snapshot-delete of an active disk (online), with ext4
# mounted on it and fio (crc32c verify) running in it: fio passes and
# /dev/mapper/<name> stays the same device.  Resize: to 300M with 32k clusters, so the
# bigger BAT moves data clusters out of its way; the device, the descriptor
# and the top image grow, resize2fs grows the mounted fs into the new room.
# Snapshot-delete of the top's parent: the layer and its file go, the top
# holds what it read from it, every file reads the same.  Refused online,
# with nothing changed: shrinking, deleting a snapshot deeper than the
# top's parent, either change on a read-only activation.  At the end
# e2fsck is clean, qemu-img check is clean on every image, the files read
# the same after deactivate / activate, and nothing is left behind.
# vm-timeout: 420
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd fio mkfs.ext4 e2fsck resize2fs qemu-img python3 dmsetup losetup blockdev

P=$SRC/userspace/prldisk
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
at_exit "cd / && $P deactivate disk >/dev/null 2>&1"
deact() { (cd / && $P deactivate "$@"); }
sums() { (cd "$1" && find . -path ./fio -prune -o -type f -print0 | sort -z |
	xargs -0 sha256sum); }
devno() { stat -L -c %t:%T /dev/mapper/disk; }
# The top's parent GUID, and how many images the descriptor has.
parent_of_top() { $P info --json "$X" | json '[i["parent"] for i in d["images"] if i["top"]][0]'; }
nimages() { $P info --json "$X" | json 'len(d["images"])'; }
fio_start() {
	fio --name=v --directory=mnt/fio --ioengine=libaio --direct=1 --rw=randrw \
		--bsrange=4k-64k --numjobs=2 --iodepth=4 --size=16M --io_size=12M \
		--verify=crc32c --verify_fatal=1 --do_verify=1 --randseed=$1 \
		--group_reporting --output-format=terse > fio.out 2> fio.err &
	fio_pid=$!
	sleep 3
}
fio_wait() {
	wait $fio_pid || fail "$1: fio verify failed: $(tail -n 5 fio.err fio.out)"
}
t0=$(date +%s)

# 32 KiB clusters (the smallest ploop and QEMU both take): the BAT of a
# 300M disk outgrows the first cluster, so the resize moves data.
$P create disk --size 96M --cluster-size 32k > /dev/null
X=$T/disk/DiskDescriptor.xml
$P activate "$X" > /dev/null
mkfs.ext4 -q /dev/mapper/disk
mkdir -p mnt
mount /dev/mapper/disk mnt
cp -a /usr/include/linux mnt/a
mkdir mnt/fio
dev0=$(devno)
TOP=$($P info --json "$X" | json '[i["image"]["path"] for i in d["images"] if i["top"]][0]')
data0=$($P info --json "$TOP" | json 'd["data_offset"]')

# ---- online resize, under fio --------------------------------------------
cp "$X" desc.before
expect_fail $P resize "$X" --size 64M
cmp -s "$X" desc.before || fail "a refused shrink changed the descriptor"
fio_start 3
$P resize "$X" --size 300M 2> resize.err || fail "online resize: $(cat resize.err)"
[ ! -s resize.err ] || fail "resize printed: $(cat resize.err)"
fio_wait resize
expect_eq "$(devno)" "$dev0" "/dev/mapper/disk is the same device"
expect_eq "$(blockdev --getsize64 /dev/mapper/disk)" $((300 << 20)) "device size"
expect_eq "$($P info --json "$X" | json 'd["virtual_size"]')" $((300 << 20)) "descriptor size"
expect_eq "$($P info --json "$TOP" | json 'd["virtual_size"]')" $((300 << 20)) "top image size"
data1=$($P info --json "$TOP" | json 'd["data_offset"]')
[ "$data1" -gt "$data0" ] || fail "the BAT did not grow ($data0 -> $data1 bytes of header and BAT)"
resize2fs /dev/mapper/disk > rs.out 2>&1 || fail "online resize2fs: $(cat rs.out)"
# Past the old end of the disk.
dd if=/dev/urandom of=mnt/big bs=1M count=120 conv=fsync status=none ||
	fail "cannot fill the grown file system"
note "resize ok ($(($(date +%s) - t0)) s)"

# ---- online snapshot-delete of the top's parent, under fio ------------------
$P snapshot "$X" > /dev/null
S1=$(parent_of_top)
cp -a /usr/include/asm-generic mnt/b
rm -rf mnt/a/netfilter
$P snapshot "$X" > /dev/null
S2=$(parent_of_top)
cp -a /usr/include/rdma mnt/c
sync
# S1 is under S2: not the top's parent.
cp "$X" desc.before
expect_fail $P snapshot-delete "$X" "$S1"
cmp -s "$X" desc.before || fail "a refused delete changed the descriptor"
expect_eq "$($P status disk --json | json 'len(d["layers"])')" 3 "layers before the delete"

fio_start 5
sleep 1
sync
sums mnt > before.sums
n0=$(nimages)
S2FILE=$($P status disk --json | json 'd["layers"][1]["image_file"]')
ts=$(date +%s%N)
$P snapshot-delete "$X" "$S2" > del.out 2> del.err || fail "online delete: $(cat del.err)"
note "online snapshot-delete took $((($(date +%s%N) - ts) / 1000000)) ms: $(cat del.out)"
grep -qF "deleted snapshot $S2 ($S2FILE) online" del.out || fail "delete said: $(cat del.out)"
[ ! -s del.err ] || fail "snapshot-delete printed: $(cat del.err)"
fio_wait delete
expect_eq "$(devno)" "$dev0" "/dev/mapper/disk is the same device after the delete"
expect_eq "$(nimages)" $((n0 - 1)) "images in the descriptor"
expect_eq "$(parent_of_top)" "$S1" "the top hangs from the deleted snapshot's parent"
[ ! -e "$S2FILE" ] || fail "$S2FILE is still there"
$P status disk --json > st.json
expect_eq "$(json 'len(d["layers"]), d["layers"][1]["guid"]' < st.json)" "2 $S1" "layers after the delete"
dmsetup ls | grep -q "disk-${S2:1:36}" && fail "the deleted layer's dm device is still there"
sums mnt > after.sums
cmp -s before.sums after.sums || fail "files differ after the delete"
note "delete ok ($(($(date +%s) - t0)) s)"

# ---- fsck, the images, and again after deactivate / activate -------------
umount mnt
e2fsck -fn /dev/mapper/disk > fsck.out 2>&1 || fail "e2fsck: $(tail -n 5 fsck.out)"
deact disk > /dev/null
nothing_left "after deactivate"
$P check "$X" > check.out 2>&1 || fail "prldisk check: $(cat check.out)"
for f in $($P info --json "$X" | json '" ".join(i["image"]["path"] for i in d["images"])'); do
	qemu-img check -q -f parallels "$f" || fail "qemu-img check $f"
done
$P activate "$X" > /dev/null
mount /dev/mapper/disk mnt
sums mnt > again.sums
cmp -s before.sums again.sums || fail "files differ after deactivate / activate"
umount mnt

# ---- a read-only activation is changed offline only ----------------------
deact disk > /dev/null
$P activate "$X" --read-only > /dev/null
cp "$X" desc.before
for c in "resize $X --size 400M" "snapshot-delete $X $S1"; do
	# shellcheck disable=SC2086
	if $P $c > out.txt 2> err.txt; then
		fail "$c of a read-only activation succeeded"
	fi
	grep -q 'read-only' err.txt || fail "refusal does not say read-only: $(cat err.txt)"
done
cmp -s "$X" desc.before || fail "a refused change altered the descriptor"
deact disk > /dev/null
nothing_left "at the end"
note "ok ($(($(date +%s) - t0)) s)"
