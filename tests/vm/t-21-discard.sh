#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Discard and WRITE_ZEROES.  Write-zeroes reads back zeros, with or without
# a lower device (whose data must not show through); whole clusters with
# nothing below are unmapped unless REQ_NOUNMAP says not to.  Discard
# unmaps the whole clusters the image owns (they read as the lower device
# again) and ignores the rest.  Seeded mixes of writes, discards and
# zeroouts end in an image that qemu-img check and compare accept.
# no_discard turns discard off.
# vm-timeout: 600
set -eu
. "$SRC/tests/vm/lib.sh"

tools=$SRC/tests/tools
ops=80		# t-long-discard runs this with "long"
[ "${1-}" != long ] || ops=400
alloc() { dmsetup status "$1" | awk '{ split($4, a, "/"); print a[1] }'; }

# Whole-cluster discards unmap; partial ones zero in place.
qemu-img create -q -f parallels -o cluster_size=64k a.hds 16M
truncate -s 64M a.hds
l=$(loop_rw a.hds)
dm_create d-a "0 32768 parallels $l -"
dd if=/dev/urandom of=/dev/mapper/d-a bs=64k count=16 oflag=direct status=none
expect_eq "$(alloc d-a)" 16 "allocated after writing 16 clusters"
blkdiscard -o $((4 << 16)) -l $((4 << 16)) /dev/mapper/d-a
expect_eq "$(alloc d-a)" 12 "allocated after discarding 4 whole clusters"
dd if=/dev/mapper/d-a of=partial.before bs=4096 skip=$(((10 << 16) / 4096)) count=1 iflag=direct status=none
blkdiscard -o $((10 << 16)) -l 4096 /dev/mapper/d-a
# BLKZEROOUT asks for REQ_NOUNMAP: zeroed in place, still allocated.
blkdiscard -z -o $((12 << 16)) -l $((3 << 16)) /dev/mapper/d-a
expect_eq "$(alloc d-a)" 12 "allocated after zeroing 3 whole clusters (NOUNMAP)"
# A punched hole is a write-zeroes that may unmap: the clusters go.
fallocate -p -o $((12 << 16)) -l $((2 << 16)) /dev/mapper/d-a
expect_eq "$(alloc d-a)" 10 "allocated after punching 2 whole clusters"
cmp -n $((4 << 16)) -i $((4 << 16)):0 /dev/mapper/d-a /dev/zero || fail "discarded clusters not zero"
# A discard of part of a cluster is ignored: the data stays.
cmp -n 4096 -i $((10 << 16)):0 /dev/mapper/d-a partial.before || fail "partial discard changed data"
cmp -n $((3 << 16)) -i $((12 << 16)):0 /dev/mapper/d-a /dev/zero || fail "zeroed clusters not zero"
end=$(dmsetup status d-a | awk '{ print $6 }')
dm_remove d-a
losetup -d "$l"
truncate -s $((end * 512)) a.hds
qemu-img check -q -f parallels a.hds || rc=$?
[ "${rc:-0}" -eq 0 ] || [ "${rc:-0}" -eq 3 ] || fail "qemu-img check: $rc (leaks allowed)"

# run NAME CLUSTER SEED [LOWER]: random writes, discards and zeroouts.
run() {
	local name=$1 cluster=$2 seed=$3 lower=${4-} ld=- l end rc=0
	qemu-img create -q -f parallels -o cluster_size="$cluster" "$name.hds" 32M
	truncate -s 32M "$name.ref"
	[ -z "$lower" ] || { dd if="$lower" of="$name.ref" conv=notrunc status=none; ld=$(loop_ro "$lower"); }
	truncate -s 128M "$name.hds"
	l=$(loop_rw "$name.hds")
	dm_create "$name" "0 65536 parallels $l $ld"
	python3 "$tools/randwrite.py" --zeroing ${lower:+--lower "$lower"} "$seed" "$ops" "$cluster" \
		"/dev/mapper/$name" "$name.ref"
	cmp "/dev/mapper/$name" "$name.ref" || fail "$name: reads differ"
	end=$(dmsetup status "$name" | awk '{ print $6 }')
	dm_remove "$name"
	losetup -d "$l"
	truncate -s $((end * 512)) "$name.hds"
	qemu-img check -q -f parallels "$name.hds" || rc=$?
	# Unmapped clusters are leaks to qemu-img (exit 3): allowed.
	[ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "$name: qemu-img check exit $rc"
	python3 "$tools/check-image.py" "$name.hds" 0x00000000 || fail "$name: structure"
	if [ -z "$lower" ]; then
		qemu-img compare -q -f parallels "$name.hds" -F raw "$name.ref" || fail "$name: compare"
	else
		qemu-img compare -q --image-opts \
			"driver=parallels,file.filename=$name.hds,backing.driver=raw,backing.file.filename=$lower" \
			"driver=raw,file.filename=$name.ref" || fail "$name: compare with lower"
	fi
	note "$name: ok"
}
run z64k 65536 11
run z1m 1048576 12
head -c $((24 << 20)) /dev/urandom > lower.raw
run zlower 65536 13 lower.raw
run zlower1m 1048576 14 lower.raw

# no_discard: the device offers no discard.
qemu-img create -q -f parallels c.hds 16M
truncate -s 64M c.hds
l=$(loop_rw c.hds)
dm_create d-c "0 32768 parallels $l - 1 no_discard"
expect_eq "$(cat /sys/block/$(dmsetup info -c --noheadings -o blkdevname d-c)/queue/discard_max_bytes)" 0 "discard_max_bytes with no_discard"
expect_fail blkdiscard /dev/mapper/d-c
