#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The rules of a writable table: the in-use flag (set before the first write,
# closed on removal: as 0, which ploop 1.15's check takes for clean, or as
# "v2.1" where a dirty bitmap was stored; an in-use image refused unless
# ignore_in_use; a table that only reads writes nothing), ENOSPC when the image device is full
# (that write fails, nothing else is lost), and concurrent writes to one
# missing cluster allocating it once.  The commit message and the periodic
# commit; the Empty flag; whole-cluster writes without the fill read.
# vm-timeout: 300
set -eu
. "$SRC/tests/vm/lib.sh"

in_use() { od -An -tx4 -j44 -N4 "$1" | tr -d ' '; }
alloc() { dmsetup status "$1" | awk '{ split($4, a, "/"); print a[1] }'; }

# A rw table that is only read writes nothing, not even the in-use flag.
qemu-img create -q -f parallels -o cluster_size=64k a.hds 16M
qemu-io -f parallels -c "write -P 7 0 1M" a.hds >/dev/null
truncate -s 32M a.hds
sum=$(sha256sum < a.hds)
l=$(loop_rw a.hds)
dm_create u "0 32768 parallels $l -"
cat /dev/mapper/u > /dev/null
dm_remove u
expect_eq "$(sha256sum < a.hds)" "$sum" "image after a read-only use of a rw table"

# The first write sets in_use (on disk, before the data); removal closes it.
dm_create u "0 32768 parallels $l -"
expect_eq "$(in_use a.hds)" 00000000 "in_use before the first write"
dd if=/dev/urandom of=/dev/mapper/u bs=4k count=1 seek=3 oflag=direct status=none
expect_eq "$(in_use a.hds)" 746f6e59 "in_use after the first write"
dm_remove u
# Closed as 0 where no format extension vouches for anything: what QEMU
# writes, and the one value ploop 1.15's check calls clean.
expect_eq "$(in_use a.hds)" 00000000 "in_use after removal"
# (on a non-sparse copy: ploop also refuses the holes qemu-img leaves in
# the BAT area, whoever closed the image)
cp --sparse=never a.hds a-flat.hds
ploop_cmd check -r a-flat.hds >&2 || fail "ploop check refuses the image the target closed"
rm a-flat.hds

# Suspend closes the image too; the next write opens it again.
dm_create u "0 32768 parallels $l -"
dd if=/dev/urandom of=/dev/mapper/u bs=4k count=1 seek=5 oflag=direct status=none
dmsetup suspend u
expect_eq "$(in_use a.hds)" 00000000 "in_use while suspended"
dmsetup resume u
dd if=/dev/urandom of=/dev/mapper/u bs=4k count=1 seek=7 oflag=direct status=none
expect_eq "$(in_use a.hds)" 746f6e59 "in_use after a write that followed resume"

# The commit message: a new BAT entry reaches the disk when it returns,
# not before (no flush was sent and the periodic commit is an hour away).
# A read-only table refuses it, and unknown messages are refused.
entry() { od -An -tu4 -j$((64 + 4 * $2)) -N4 "$1" | tr -d ' '; }
dm_remove u
dm_create u "0 32768 parallels $l - 1 commit_interval_ms:3600000"
expect_eq "$(entry a.hds 100)" 0 "BAT entry 100 before the write"
dd if=/dev/urandom of=/dev/mapper/u bs=4k count=1 seek=1600 oflag=direct status=none
expect_eq "$(entry a.hds 100)" 0 "BAT entry 100 before the commit message"
dmsetup message u 0 commit
[ "$(entry a.hds 100)" != 0 ] || fail "BAT entry 100 still 0 after the commit message"
expect_fail dmsetup message u 0 frobnicate
lr=$(loop_ro a.hds)
dm_create r "0 32768 parallels $lr -" --readonly
expect_fail dmsetup message r 0 commit
dm_remove r
losetup -d "$lr"

# The periodic commit: with no flush and no message, a new BAT entry is on
# disk within a few commit_interval_ms (200 ms here).
dm_remove u
dm_create u "0 32768 parallels $l - 1 commit_interval_ms:200"
dd if=/dev/urandom of=/dev/mapper/u bs=4k count=1 seek=1760 oflag=direct status=none
for _ in 1 2 3 4 5 6 7 8 9 10; do
	[ "$(entry a.hds 110)" = 0 ] || break
	sleep 0.5
done
[ "$(entry a.hds 110)" != 0 ] || fail "BAT entry 110 still 0 5 s after the write (commit_interval_ms:200)"

# An image left in use (a crash): rw refused, ignore_in_use or ro accepted.
cp a.hds crashed.hds
dm_remove u
expect_eq "$(in_use crashed.hds)" 746f6e59 "the copy is in use"
lc=$(loop_rw crashed.hds)
dmesg_mark
expect_fail dmsetup create c --table "0 32768 parallels $lc -"
dmesg_since_mark | grep -qF "Image in use or not closed cleanly (see ignore_in_use)" ||
	fail "no in-use message"
dm_create c "0 32768 parallels $lc - 1 ignore_in_use"
expect_eq "$(dmsetup table c | cut -d' ' -f6-)" "1 ignore_in_use" "table of ignore_in_use"
dd if=/dev/urandom of=/dev/mapper/c bs=4k count=1 seek=9 oflag=direct status=none
dm_remove c
expect_eq "$(in_use crashed.hds)" 00000000 "closed after ignore_in_use"
python3 "$SRC/tests/tools/patch-image.py" crashed.hds in_use=0x746f6e59
dm_create c "0 32768 parallels $lc -" --readonly
expect_eq "$(dmsetup status c | awk '{ print $7 }')" needs_check "state of a ro table of an in-use image"
dm_remove c
losetup -d "$lc"

# The Empty flag (header flags bit 0, set by ploop init and prldisk
# create; QEMU ignores it): cleared by the first allocation, kept by a
# table that allocates nothing.
flags() { od -An -tu4 -j52 -N4 "$1" | tr -d ' '; }
qemu-img create -q -f parallels -o cluster_size=64k e.hds 16M
python3 "$SRC/tests/tools/patch-image.py" e.hds flags=1
truncate -s 32M e.hds
le=$(loop_rw e.hds)
dm_create e "0 32768 parallels $le -"
cat /dev/mapper/e > /dev/null
dm_remove e
expect_eq "$(($(flags e.hds) & 1))" 1 "Empty flag after reads only"
dm_create e "0 32768 parallels $le -"
dd if=/dev/urandom of=/dev/mapper/e bs=4k count=1 oflag=direct status=none
dm_remove e
expect_eq "$(($(flags e.hds) & 1))" 0 "Empty flag after a write"

# A whole-cluster write needs no fill: with a lower device that fails every
# read, it succeeds and reads back, while a partial write to a missing
# cluster (which must read the lower data) fails with EIO and leaves the
# cluster unallocated.
qemu-img create -q -f parallels -o cluster_size=64k w.hds 16M
truncate -s 32M w.hds
lw=$(loop_rw w.hds)
dm_create bad "0 32768 error"
dm_create w "0 32768 parallels $lw /dev/mapper/bad"
head -c 65536 /dev/urandom > cl.bin
dd if=cl.bin of=/dev/mapper/w bs=64k seek=3 oflag=direct status=none ||
	fail "a whole-cluster write read the lower device"
cmp cl.bin <(dd if=/dev/mapper/w bs=64k skip=3 count=1 iflag=direct status=none) ||
	fail "the whole-cluster write does not read back"
end0=$(dmsetup status w | awk '{ print $6 }')
expect_err 'Input/output error' dd if=cl.bin of=/dev/mapper/w bs=4k count=1 seek=80 oflag=direct status=none
expect_eq "$(alloc w)" 1 "clusters after a failed fill"
end=$(dmsetup status w | awk '{ print $6 }')
expect_eq "$end" "$end0" "image end after a failed fill (the cluster goes back)"
# Writes that wait for a fill that fails fail with it, and leak nothing.
for i in $(seq 0 7); do
	(dd if=cl.bin of=/dev/mapper/w bs=4k count=1 seek=$((96 + i)) oflag=direct status=none \
		2>/dev/null && echo "write $i succeeded" >> waited.bad) &
done
wait
[ ! -e waited.bad ] || fail "writes to a cluster whose fill failed: $(cat waited.bad)"
expect_eq "$(dmsetup status w | awk '{ print $4, $6 }')" "1/256 $end0" \
	"allocated and image end after 8 writes to a cluster whose fill failed"
dm_remove w
dm_remove bad
losetup -d "$lw"
expect_eq "$(entry w.hds 5)" 0 "BAT entry of the cluster whose fill failed"
truncate -s $((end * 512)) w.hds
# The failed cluster was the last one: given back, nothing leaked.
rc=0; qemu-img check -q -f parallels w.hds 2>/dev/null || rc=$?
expect_eq "$rc" 0 "qemu-img check after a failed fill (no leak)"

# ENOSPC: no room for another cluster.  That write fails; others go on.
qemu-img create -q -f parallels -o cluster_size=64k full.hds 16M
qemu-io -f parallels -c "write -P 1 0 128k" full.hds >/dev/null
size=$(stat -c %s full.hds)
truncate -s $((size + 65536)) full.hds		# room for exactly one more
lf=$(loop_rw full.hds)
dm_create f "0 32768 parallels $lf -"
dd if=/dev/urandom of=/dev/mapper/f bs=64k count=1 seek=5 oflag=direct status=none
dmesg_mark
expect_err 'No space left on device' dd if=/dev/urandom of=/dev/mapper/f bs=64k count=1 seek=9 oflag=direct status=none
dmesg_since_mark | grep -qF "image device full, write refused" || fail "no ENOSPC message"
dd if=/dev/urandom of=/dev/mapper/f bs=4k count=4 seek=2 oflag=direct status=none	# allocated: fine
expect_eq "$(alloc f)" 3 "allocated after ENOSPC"
expect_eq "$(dmsetup status f | awk '{ print $7 }')" rw "state after ENOSPC"
expect_eq "$(dmsetup status f | awk '{ print $9 }')" 1 "writes refused for space, in status"
dm_remove f
qemu-img check -q -f parallels full.hds || fail "qemu-img check after ENOSPC"

# A v1 image addresses 2 TiB at most (BAT entries in sectors): with its
# last cluster just below, the next allocation is refused like ENOSPC,
# with its own message, while the device has room and allocated clusters
# stay writable.
"$SRC/userspace/prldisk" create v1 --size 64M --image-format v1 --cluster-size 1M > /dev/null
python3 "$SRC/tests/tools/patch-image.py" v1/root.hds "bat[1]=$(((1 << 32) - 2048))"
truncate -s $(((1 << 41) + (16 << 20))) v1/root.hds
lv=$(loop_rw v1/root.hds)
dm_create v "0 131072 parallels $lv -"
head -c 1048576 /dev/urandom > c1.bin
dd if=c1.bin of=/dev/mapper/v bs=1M seek=1 oflag=direct status=none
dmesg_mark
expect_err 'No space left on device' dd if=c1.bin of=/dev/mapper/v bs=1M seek=5 oflag=direct status=none
dmesg_since_mark | grep -qF "image at the end its BAT can address (v1: 2 TiB), write refused" ||
	fail "no v1 limit message: $(dmesg_since_mark | tail -n 2)"
expect_eq "$(dmsetup status v | awk '{ print $6, $9 }')" "$((1 << 32)) 1" "image end and refused writes"
cmp c1.bin <(dd if=/dev/mapper/v bs=1M skip=1 count=1 iflag=direct status=none) ||
	fail "the cluster at 2 TiB does not read back"
dm_remove v
losetup -d "$lv"
truncate -s $((1 << 41)) v1/root.hds
qemu-img check -q -f parallels v1/root.hds || fail "qemu-img check of the v1 image at its limit"
qemu-img convert -f parallels -O raw v1/root.hds v1.raw
cmp c1.bin <(dd if=v1.raw bs=1M skip=1 count=1 status=none) ||
	fail "QEMU does not read the cluster at 2 TiB as written"
rm -rf v1 v1.raw

# Concurrent writes to one missing cluster allocate it once.
qemu-img create -q -f parallels -o cluster_size=1M con.hds 16M
truncate -s 64M con.hds
lo=$(loop_rw con.hds)
dm_create k "0 32768 parallels $lo -"
for i in $(seq 0 15); do
	dd if=/dev/zero bs=4k count=1 status=none | tr '\0' "\\$(printf '%03o' $((65 + i)))" |
		dd of=/dev/mapper/k bs=4k seek=$((256 + i * 16)) oflag=direct status=none &
done
wait
expect_eq "$(alloc k)" 1 "allocations for 16 concurrent writes to one cluster"
for i in $(seq 0 15); do
	got=$(dd if=/dev/mapper/k bs=4k skip=$((256 + i * 16)) count=1 status=none | tr -d "\\$(printf '%03o' $((65 + i)))" | wc -c)
	expect_eq "$got" 0 "block $i"
done
end=$(dmsetup status k | awk '{ print $6 }')
dm_remove k
losetup -d "$lo"
truncate -s $((end * 512)) con.hds
qemu-img check -q -f parallels con.hds || fail "qemu-img check after concurrent writes"

# With a dirty bitmap stored, "v2.1" (0x312e3276) vouches for it; and a
# table without cbt on that image closes it as 0 again (the bitmap goes).
qemu-img create -q -f parallels -o cluster_size=64k v21.hds 16M
truncate -s 32M v21.hds
lv=$(loop_rw v21.hds)
dm_create v "0 32768 parallels $lv - 1 cbt"
dd if=/dev/urandom of=/dev/mapper/v bs=4k count=1 seek=3 oflag=direct status=none
dm_remove v
expect_eq "$(in_use v21.hds)" 312e3276 "in_use after a cbt table stored its bitmap"
