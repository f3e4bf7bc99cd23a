#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Snapshot stacks as chained tables, built by hand with dmsetup: a raw file
# at the bottom, two parallels layers above (the middle one larger than the
# raw file, the top larger than the middle: a shorter lower device reads as
# zeros past its end), and a ploop snapshot chain.  Each reads as QEMU's
# flattened view (qemu-img convert --image-opts with backing.* options).
# Then writes through the top of the 3-layer stack: the lower images stay
# bit-identical and the top reads as flattened chain plus writes.
# vm-timeout: 600
set -eu
. "$SRC/tests/vm/lib.sh"

opts_top="driver=parallels,file.filename=top.hds"
opts_mid="driver=parallels,file.filename=mid.hds,backing.driver=raw,backing.file.filename=base.raw"
chain="$opts_top,backing.driver=parallels,backing.file.filename=mid.hds,backing.backing.driver=raw,backing.backing.file.filename=base.raw"

head -c $((24 << 20)) /dev/urandom > base.raw
dd if=/dev/zero of=base.raw bs=1M seek=8 count=4 conv=notrunc status=none
qemu-img create -q -f parallels -o cluster_size=64k mid.hds 40M
qemu-img create -q -f parallels -o cluster_size=1M top.hds 64M
# Overlapping writes: the upper layer must win; some past the layer below.
qemu-io --image-opts -c "write -P 0xa1 1M 3M" -c "write -P 0xa2 $((10 << 20)) 100k" \
	-c "write -P 0xa3 $((30 << 20)) 2M" -c "write -P 0xa4 $(((40 << 20) - 4096)) 4096" \
	"$opts_mid" >/dev/null
qemu-io --image-opts -c "write -P 0xb1 2M 512" -c "write -P 0xb2 $((31 << 20)) 64k" \
	-c "write -P 0xb3 $((50 << 20)) 1M" -c "write -P 0xb4 $(((64 << 20) - 512)) 512" \
	"driver=parallels,file.filename=top.hds" >/dev/null
qemu-img convert --image-opts "$opts_mid" -O raw want-mid.raw
qemu-img convert --image-opts "$chain" -O raw want-top.raw
# QEMU reads past a shorter backing file as zeros; make sure of it.
cmp -n $((16 << 20)) -i $((24 << 20)):$((24 << 20)) want-mid.raw /dev/zero 2>/dev/null ||
	cmp -n $((6 << 20)) -i $((24 << 20)):0 want-mid.raw /dev/zero ||
	fail "QEMU does not read zeros past the backing file: expectations invalid"
sha256sum base.raw mid.hds > lower.sums

lb=$(loop_ro base.raw)
lm=$(loop_ro mid.hds)
lt=$(loop_ro top.hds)
dm_create s-mid "0 $((40 << 11)) parallels $lm $lb" --readonly
dm_create s-top "0 $((64 << 11)) parallels $lt /dev/mapper/s-mid" --readonly
cmp /dev/mapper/s-mid want-mid.raw || fail "2-layer stack (raw below) differs"
cmp /dev/mapper/s-top want-top.raw || fail "3-layer stack differs"
# A single layer over zeros.
dm_create s-alone "0 $((64 << 11)) parallels $lt -" --readonly
qemu-img convert -f parallels -O raw top.hds want-alone.raw
cmp /dev/mapper/s-alone want-alone.raw || fail "top over zeros differs"
dm_remove s-alone
dm_remove s-top
losetup -d "$lt"
note "read-only stacks ok"

# Writes through the top: only top.hds changes.
cp want-top.raw ref.raw
truncate -s 200M top.hds
lt=$(loop_rw top.hds)
dm_create s-top "0 $((64 << 11)) parallels $lt /dev/mapper/s-mid"
python3 "$SRC/tests/tools/randwrite.py" 7 120 $((1 << 20)) /dev/mapper/s-top ref.raw
cmp /dev/mapper/s-top ref.raw || fail "stack reads other data than written"
end=$(dmsetup status s-top | awk '{ print $6 }')
dm_remove_all
losetup -d "$lt"
truncate -s $((end * 512)) top.hds
sha256sum -c --quiet lower.sums || fail "a lower image changed"
qemu-img check -q -f parallels top.hds || fail "qemu-img check of the top"
qemu-img compare -q --image-opts "$chain" "driver=raw,file.filename=ref.raw" ||
	fail "flattened chain differs from what was written"
note "writes through the stack ok"

# A ploop snapshot chain: base written, snapshot, top written by QEMU.
mkdir p
(cd p && ploop_cmd init -s 32M -t none root.hds && ploop_cmd snapshot DiskDescriptor.xml) \
	>/dev/null 2>&1 || fail "ploop"
ptop=$(ls p/root.hds.\{*\})
qemu-io -f parallels -c "write -P 0xc1 0 8M" p/root.hds >/dev/null
qemu-io --image-opts -c "write -P 0xc2 1M 1M" -c "write -P 0xc3 $((30 << 20)) 512" \
	"driver=parallels,file.filename=$ptop,backing.driver=parallels,backing.file.filename=p/root.hds" >/dev/null
qemu-img convert --image-opts -O raw \
	"driver=parallels,file.filename=$ptop,backing.driver=parallels,backing.file.filename=p/root.hds" want-ploop.raw
l1=$(loop_ro p/root.hds)
l2=$(loop_ro "$ptop")
dm_create p-base "0 $((32 << 11)) parallels $l1 -" --readonly
dm_create p-top "0 $((32 << 11)) parallels $l2 /dev/mapper/p-base" --readonly
cmp /dev/mapper/p-top want-ploop.raw || fail "ploop chain differs"
note "ploop chain ok"
