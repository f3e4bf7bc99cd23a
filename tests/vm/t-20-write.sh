#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Writable tables: seeded random writes (sub-cluster, cross-cluster,
# rewrites, the last partial cluster, 512 B .. 4 MiB) through the device
# and to a raw reference.  After a clean removal: in_use is "closed",
# qemu-img check is clean, our structural check (duplicates, metadata
# overlaps) passes, qemu-img compare says identical, and QEMU can go on
# writing the image and still compare equal.
# vm-timeout: 600
set -eu
. "$SRC/tests/vm/lib.sh"

tools=$SRC/tests/tools
writes=60	# t-long-write runs this with "long"
[ "${1-}" != long ] || writes=400
CLOSED=0x00000000	# no format extension: closed as 0, as QEMU and ploop do
OPEN=0x746f6e59

in_use() { od -An -tx4 -j44 -N4 "$1" | tr -d ' '; }

# run NAME IMAGE SIZE_BYTES CLUSTER_BYTES SEED [LOWER_RAW]
run() {
	local name=$1 img=$2 size=$3 cluster=$4 seed=$5 lower=${6-}
	local sectors=$((size / 512)) lower_dev=- l st end
	note "$name: $((size >> 20)) MiB, cluster $cluster, seed $seed${lower:+, lower $lower}"

	# The reference starts as what the device shows: the lower image or zeros.
	truncate -s "$size" "$name.ref"
	[ -z "$lower" ] || dd if="$lower" of="$name.ref" conv=notrunc status=none
	# Room to grow: the loop device must cover every cluster it may get.
	truncate -s $((size * 2 + (8 << 20))) "$img"
	[ -z "$lower" ] || lower_dev=$(loop_ro "$lower")
	l=$(loop_rw "$img")
	dm_create "$name" "0 $sectors parallels $l $lower_dev"

	python3 "$tools/randwrite.py" "$seed" "$writes" "$cluster" "/dev/mapper/$name" "$name.ref"
	expect_eq "$(in_use "$img")" "${OPEN#0x}" "in_use while open"
	cmp "/dev/mapper/$name" "$name.ref" || fail "$name: device reads other data than written"
	st=$(dmsetup status "$name")
	note "status: $st"
	set -- $st	# start len parallels alloc/total cluster end state cbt
	expect_eq "$7" rw "state"
	end=$6
	dm_remove "$name"
	losetup -d "$l"
	truncate -s $((end * 512)) "$img"

	expect_eq "$(in_use "$img")" "${CLOSED#0x}" "in_use after removal"
	qemu-img check -q -f parallels "$img" || fail "$name: qemu-img check exit $?"
	python3 "$tools/check-image.py" "$img" "$CLOSED" || fail "$name: structure"
	if [ -z "$lower" ]; then
		qemu-img compare -q -f parallels "$img" -F raw "$name.ref" ||
			fail "$name: qemu-img compare differs"
		# QEMU goes on writing where we left off.
		qemu-io -f parallels -c "write -P 0x5a 4096 $((cluster * 2))" "$img" >/dev/null
		printf '\x5a%.0s' $(seq $((cluster * 2))) |
			dd of="$name.ref" bs=4096 seek=1 conv=notrunc status=none
		qemu-img compare -q -f parallels "$img" -F raw "$name.ref" ||
			fail "$name: differs after QEMU wrote to it"
		qemu-img check -q -f parallels "$img" || fail "$name: check after QEMU wrote"
	else
		qemu-img compare -q --image-opts \
			"driver=parallels,file.filename=$img,backing.driver=raw,backing.file.filename=$lower" \
			"driver=raw,file.filename=$name.ref" ||
			fail "$name: flattened chain differs"
	fi
}

qemu-img create -q -f parallels -o cluster_size=65536 v2-64k.hds $((64 * 1048576 + 7 * 512))
run v2-64k v2-64k.hds $((64 * 1048576 + 7 * 512)) 65536 1

qemu-img create -q -f parallels -o cluster_size=1M v2-1m.hds 64M
head -c $((40 << 20)) /dev/urandom > lower.raw
run v2-1m-lower v2-1m.hds $((64 << 20)) $((1 << 20)) 2 lower.raw

qemu-img create -q -f parallels -o cluster_size=3M v2-3m.hds 60M
run v2-3m v2-3m.hds $((60 << 20)) $((3 << 20)) 3

mkdir ploop
(cd ploop && ploop_cmd init -s 64M -t none root.hds >/dev/null 2>&1)
run v1-ploop ploop/root.hds $((64 << 20)) $((1 << 20)) 4
