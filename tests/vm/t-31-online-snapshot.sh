#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# prldisk snapshot of an active disk (online): ext4 on a prldisk-made disk,
# mounted, a tree copied, fio with crc32c verify running in the mounted fs
# while the snapshot is taken: fio passes, /dev/mapper/<name> stays the same
# device, the old top becomes the read-only layer <name>-<guid> and its
# file is cut back to its image end.  After umount and deactivate, the
# snapshot activates read-only under another name with exactly the files
# of snapshot time (later ones absent), e2fsck clean on the snapshot and
# the top, qemu-img check clean on every image.  A second online snapshot
# (3 layers), then deactivate / activate: the same files.  A read-only
# activation is refused, with nothing changed.
# vm-timeout: 420
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd fio mkfs.ext4 e2fsck qemu-img python3 dmsetup losetup

P=$SRC/userspace/prldisk
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
at_exit "cd / && for n in disk snap; do $P deactivate \$n >/dev/null 2>&1; done"
deact() { (cd / && $P deactivate "$@"); }
sums() { (cd "$1" && find . -path ./fio -prune -o -type f -print0 | sort -z |
	xargs -0 sha256sum); }
devno() { stat -L -c %t:%T /dev/mapper/disk; }
# image_end of an image file, in bytes
img_end() { $P info --json "$1" | json 'd["image_end"]'; }
t0=$(date +%s)

$P create disk --size 256M > /dev/null
X=$T/disk/DiskDescriptor.xml
ROOT=$T/disk/root.hds
$P activate "$X" > /dev/null
mkfs.ext4 -q /dev/mapper/disk
mkdir -p mnt mnt2
mount /dev/mapper/disk mnt
cp -a /usr/include/linux mnt/tree
mkdir mnt/fio
dev0=$(devno)

# ---- first online snapshot, under fio ------------------------------------
fio --name=v --directory=mnt/fio --ioengine=libaio --direct=1 --rw=randrw \
	--bsrange=4k-64k --numjobs=2 --iodepth=4 --size=32M --io_size=16M \
	--verify=crc32c --verify_fatal=1 --do_verify=1 --randseed=7 \
	--group_reporting --output-format=terse > fio.out 2> fio.err &
fio_pid=$!
sleep 4
sync
sums mnt > snap1.sums
kill -0 $fio_pid 2>/dev/null || note "fio ended before the snapshot (a weaker test)"
ts=$(date +%s%N)
$P snapshot "$X" --json > snap1.json 2> snap1.err || fail "online snapshot: $(cat snap1.err)"
note "online snapshot took $((($(date +%s%N) - ts) / 1000000)) ms"
[ ! -s snap1.err ] || fail "snapshot printed: $(cat snap1.err)"
running=0
kill -0 $fio_pid 2>/dev/null && running=1
wait $fio_pid || fail "fio verify failed: $(tail -n 5 fio.err fio.out)"
note "fio passed (still running after the snapshot: $running)"
S1=$(json 'd["snapshot"]' < snap1.json)
TOP1=$(json 'd["image"]' < snap1.json)
expect_eq "$(json 'd["top"]' < snap1.json)" '{5fbaabe3-6958-40ff-92a7-860e329aab41}' "new top GUID"
expect_eq "$(devno)" "$dev0" "/dev/mapper/disk is the same device"
$P status disk --json > st.json
expect_eq "$(json 'len(d["layers"]), d["read_only"], d["layers"][0]["image_file"],
	d["layers"][1]["name"], d["layers"][1]["read_only"], d["layers"][1]["guid"],
	d["layers"][1]["image_file"]' < st.json)" \
	"2 False $TOP1 disk-${S1:1:36} True $S1 $ROOT" "status after the snapshot"
expect_eq "$(stat -c %s "$ROOT")" "$(img_end "$ROOT")" "old top cut back to its image end"

# Files after the snapshot are the top's only.
cp -a /usr/share/perl5 mnt/after
rm -rf mnt/tree/mtd
sync
sums mnt > top1.sums
umount mnt
e2fsck -fn /dev/mapper/disk > fsck.out 2>&1 || fail "e2fsck of the top: $(tail -5 fsck.out)"
deact disk
nothing_left "after the first deactivate"

# ---- the snapshot, read-only, as it was ----------------------------------
$P activate "$X" --snapshot "$S1" --read-only --name snap > /dev/null
e2fsck -fn /dev/mapper/snap > fsck.out 2>&1 || fail "e2fsck of the snapshot: $(tail -5 fsck.out)"
mount -o ro,noload /dev/mapper/snap mnt2
sums mnt2 > got.sums
[ ! -e mnt2/after ] || fail "a file written after the snapshot is in it"
cmp -s got.sums snap1.sums || fail "snapshot files differ: $(diff snap1.sums got.sums | head -5)"
umount mnt2
deact snap
for f in "$T"/disk/root.hds*; do
	qemu-img check -q -f parallels "$f" || fail "qemu-img check $f"
done
note "first snapshot ok ($(($(date +%s) - t0)) s)"

# ---- a second online snapshot: 3 layers ------------------------------------
$P activate "$X" > /dev/null
mount /dev/mapper/disk mnt
(cd mnt && sha256sum --quiet -c ../top1.sums) || fail "top files differ after re-activation"
cp -a /usr/include/linux/netfilter mnt/second
sync
sums mnt > snap2.sums
dev0=$(devno)
$P snapshot "$X" --json > snap2.json || fail "second online snapshot"
S2=$(json 'd["snapshot"]' < snap2.json)
TOP2=$(json 'd["image"]' < snap2.json)
expect_eq "$(devno)" "$dev0" "/dev/mapper/disk the same device (second)"
expect_eq "$($P status disk --json | json 'len(d["layers"]), d["layers"][1]["name"],
	d["layers"][2]["name"], d["layers"][0]["image_file"]')" \
	"3 disk-${S2:1:36} disk-${S1:1:36} $TOP2" "status with 3 layers"
expect_eq "$($P list --json | json '[(x["name"], len(x["layers"])) for x in d["disks"]]')" \
	"[('disk', 3)]" "list with 3 layers"
$P status disk | sed 's/^/# /' >&2
echo third > mnt/third.txt
sync
sums mnt > top2.sums
umount mnt
deact disk
nothing_left "after the second deactivate"
$P activate "$X" > /dev/null
e2fsck -fn /dev/mapper/disk > fsck.out 2>&1 || fail "e2fsck of the 3-layer top: $(tail -5 fsck.out)"
mount /dev/mapper/disk mnt
sums mnt > got.sums
cmp -s got.sums top2.sums || fail "3-layer top differs after re-activation"
umount mnt
deact disk
$P activate "$X" --snapshot "$S2" --read-only --name snap > /dev/null
mount -o ro,noload /dev/mapper/snap mnt2
sums mnt2 > got.sums
cmp -s got.sums snap2.sums || fail "second snapshot differs"
umount mnt2
deact snap
nothing_left "after the 3-layer checks"
for f in "$T"/disk/root.hds*; do
	qemu-img check -q -f parallels "$f" || fail "qemu-img check $f"
	expect_eq "$(stat -c %s "$f")" "$(img_end "$f")" "$f file size"
done

# ---- a read-only activation is not snapshotted online ------------------------
cp "$X" desc.before
$P activate "$X" --read-only > /dev/null
if $P snapshot "$X" > out.txt 2> err.txt; then
	fail "snapshot of a read-only activation succeeded"
fi
grep -q 'read-only' err.txt || fail "refusal does not say read-only: $(cat err.txt)"
note "refused as expected: $(cat err.txt)"
cmp -s "$X" desc.before || fail "the refused snapshot changed the descriptor"
deact disk
nothing_left "at the end"
note "ok ($(($(date +%s) - t0)) s)"
