#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Read-only tables read what QEMU reads: images made by qemu-img (cluster
# sizes 4k, 64k, 1M, 2M and an odd 3M; virtual sizes that are and are not
# cluster multiples; writes aligned, unaligned, across clusters and in the
# last partial cluster; convert of random data with holes) and by Debian's
# ploop (v1, Empty flag set, then written by QEMU).  Each is compared byte
# for byte with qemu-img convert -O raw, is bit-identical (sha256) after
# activation and removal, and its status and table lines are checked.
# vm-timeout: 600
set -eu
. "$SRC/tests/vm/lib.sh"

# check NAME IMAGE: activate read-only, compare, check status, remove.
check() {
	local name=$1 img=$2 size sectors l st sum
	size=$(qemu-img info --output=json -f parallels "$img" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
	sectors=$((size / 512))
	qemu-img convert -f parallels -O raw "$img" "$name.raw"
	sum=$(sha256sum < "$img")
	l=$(loop_ro "$img")
	dm_create "$name" "0 $sectors parallels $l -" --readonly
	cmp "/dev/mapper/$name" "$name.raw" || fail "$name: reads differ from QEMU's"
	# A shorter table serves the start of the disk.
	dm_create "$name-half" "0 $((sectors / 2)) parallels $l -" --readonly
	cmp -n $((sectors / 2 * 512)) "/dev/mapper/$name-half" "$name.raw" ||
		fail "$name: half-length table differs"
	st=$(dmsetup status "$name")
	set -- $st
	expect_eq "$3 $7 $8 $9" "parallels ro - 0" "$name: status '$st'"
	expect_eq "$(dmsetup table "$name")" "0 $sectors parallels $(cat /sys/block/${l#/dev/}/dev) -" "$name: table"
	dm_remove "$name-half"
	dm_remove "$name"
	losetup -d "$l"
	expect_eq "$(sha256sum < "$img")" "$sum" "$name: image changed by a read-only activation"
	note "$name: ok ($st)"
	rm -f "$name.raw"
	checked=$((checked + 1))
}

checked=0 i=0
for cs in 4k 64k 1M 2M 3M; do
	for size in $((48 << 20)) $((48 * 1048576 + 4096 + 3 * 512)); do
		i=$((i + 1))
		img=q$i.hds
		qemu-img create -q -f parallels -o cluster_size=$cs "$img" "$size"
		qemu-io -f parallels \
			-c "write -P 0x11 0 64k" \
			-c "write -P 0x22 1536 7680" \
			-c "write -P 0x33 $((3 * 1048576 - 2048)) 8k" \
			-c "write -P 0x44 $((9 * 1048576 + 512)) 2M" \
			-c "write -P 0x55 $((size - 1024)) 1024" \
			-c "write -P 0x66 $((20 * 1048576)) 4096" \
			-c "write -P 0x77 $((20 * 1048576 + 512)) 512" \
			"$img" >/dev/null
		check "q$i-$cs" "$img"
	done
done

# Random data with holes, converted by QEMU.
head -c $((16 << 20)) /dev/urandom > rnd.raw
dd if=/dev/zero of=rnd.raw bs=1M seek=4 count=5 conv=notrunc status=none
truncate -s 40M rnd.raw
qemu-img convert -f raw -O parallels -o cluster_size=64k rnd.raw rnd.hds
check convert rnd.hds

# Debian's ploop: v1, Empty flag set; then QEMU writes into it.
mkdir p
(cd p && ploop_cmd init -s 64M -t none root.hds >/dev/null 2>&1) || fail "ploop init"
expect_eq "$(head -c 16 p/root.hds)" WithoutFreeSpace "ploop magic"
check ploop-empty p/root.hds
qemu-io -f parallels -c "write -P 0x99 1M 3M" -c "write -P 0x98 $((63 << 20)) 1M" p/root.hds >/dev/null
expect_eq "$(od -An -tx4 -j52 -N4 p/root.hds | tr -d ' ')" 00000001 "Empty flag still set by QEMU"
check ploop-written p/root.hds

# Bash can drop a loop on an expansion error without set -e noticing.
expect_eq "$checked" 13 "images checked"
