#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Discard and WRITE_ZEROES on a snapshot child (a 2-layer chain: a
# read-only base table with data, a writable child over it).  Discard
# promises no zeroes, so it must never allocate: only WRITE_ZEROES may.
#
# blkdiscard: discarding the whole empty child leaves its allocated count
#   and image end as they were.
# mkfs: mkfs.ext4 (which discards the device first) allocates no more
#   clusters and grows the image no more than mkfs.ext4 -E nodiscard on an
#   identical child.
# fstrim: fstrim of the mounted child raises neither its allocated count
#   nor its image end.
# zeroout: the child offers WRITE_ZEROES, and `blkdiscard -z` works on it:
#   over clusters with base data, a cluster of its own, part of a cluster;
#   the ranges read as zeros and the rest as before (qemu-img compare with
#   the base as backing file against a raw reference); so does fallocate
#   --punch-hole, a zeroout that cannot fall back to writing zero pages.
# After each case the child passes qemu-img check (leaks allowed).
# vm-timeout: 300
set -eEu
. "$SRC/tests/vm/lib.sh"
require_cmd blkdiscard mkfs.ext4 fstrim qemu-img

C=65536			# cluster bytes
S=131072		# device sectors (64 MiB)
alloc() { dmsetup status "$1" | awk '{ split($4, a, "/"); print a[1] }'; }
iend() { dmsetup status "$1" | awk '{ print $6 }'; }
blkdev() { dmsetup info -c --noheadings -o blkdevname "$1"; }

# The base: random data in its first 32 MiB, the rest unallocated.
head -c $((32 << 20)) /dev/urandom > base.raw
truncate -s $((S * 512)) base.raw
qemu-img convert -q -f raw -O parallels -o cluster_size=64k base.raw base.hds
lb=$(loop_ro base.hds)
dm_create base "0 $S parallels $lb -" --readonly

# child NAME: a new empty child of base, active as NAME; prints its loop.
child() {
	local l
	qemu-img create -q -f parallels -o cluster_size=64k "$1.hds" $((S * 512))
	truncate -s 128M "$1.hds"
	l=$(loop_rw "$1.hds")
	dm_create "$1" "0 $S parallels $l /dev/mapper/base"
	echo "$l"
}

# finish NAME LOOP: remove, cut the file at the image end, qemu-img check.
finish() {
	local end rc=0
	end=$(iend "$1")
	dm_remove "$1"
	losetup -d "$2"
	truncate -s $((end * 512)) "$1.hds"
	qemu-img check -q -f parallels "$1.hds" || rc=$?
	[ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "$1: qemu-img check exit $rc"
}

case_blkdiscard() {
	local l e0
	l=$(child cd)
	e0=$(iend cd)
	blkdiscard /dev/mapper/cd
	note "after blkdiscard of the whole empty child: allocated $(alloc cd), image end $(iend cd) (was $e0)"
	expect_eq "$(alloc cd)" 0 "allocated clusters after blkdiscard of the whole empty child"
	expect_eq "$(iend cd)" "$e0" "image end after blkdiscard of the whole empty child"
	# The base shows through where the child has nothing.
	cmp -n $((4 << 20)) /dev/mapper/cd base.raw || fail "the base's data no longer shows through the child"
	finish cd "$l"
}

case_mkfs() {
	local l1 l2 a1 a2 e1 e2
	l1=$(child cm)
	l2=$(child cn)
	mkfs.ext4 -q /dev/mapper/cm
	mkfs.ext4 -q -E nodiscard /dev/mapper/cn
	a1=$(alloc cm) e1=$(iend cm) a2=$(alloc cn) e2=$(iend cn)
	note "mkfs.ext4: allocated $a1, image end $e1; with -E nodiscard: allocated $a2, image end $e2"
	[ "$a1" -le "$a2" ] || fail "mkfs.ext4 with discard allocated $a1 clusters, without discard $a2"
	[ "$e1" -le "$e2" ] || fail "mkfs.ext4 with discard grew the image to sector $e1, without discard to $e2"
	e2fsck -fn /dev/mapper/cm > fsck.out 2>&1 || fail "e2fsck after mkfs with discard: $(tail -n 5 fsck.out)"
	finish cm "$l1"
	finish cn "$l2"
}

case_fstrim() {
	local l a1 e1 a2 e2
	l=$(child ct)
	mkfs.ext4 -q -E nodiscard /dev/mapper/ct
	mkdir -p mnt
	# noinit_itable: no lazy inode table zeroing allocating meanwhile.
	mount -o noinit_itable /dev/mapper/ct mnt
	head -c $((4 << 20)) /dev/urandom > keep.bin
	cp keep.bin mnt/keep
	head -c $((8 << 20)) /dev/urandom > mnt/gone
	sync
	rm mnt/gone
	sync
	a1=$(alloc ct) e1=$(iend ct)
	fstrim -v mnt
	a2=$(alloc ct) e2=$(iend ct)
	note "fstrim: allocated $a1 -> $a2, image end $e1 -> $e2"
	[ "$a2" -le "$a1" ] || fail "fstrim of the mounted child raised its allocated clusters from $a1 to $a2"
	[ "$e2" -le "$e1" ] || fail "fstrim of the mounted child raised its image end from $e1 to $e2"
	umount mnt
	mount -o ro /dev/mapper/ct mnt
	cmp mnt/keep keep.bin || fail "a file changed across fstrim"
	umount mnt
	e2fsck -fn /dev/mapper/ct > fsck.out 2>&1 || fail "e2fsck after fstrim: $(tail -n 5 fsck.out)"
	finish ct "$l"
}

case_zeroout() {
	local l wz lr
	# Control: a table with no lower device does all of this today.
	qemu-img create -q -f parallels -o cluster_size=64k cr.hds $((S * 512))
	truncate -s 128M cr.hds
	lr=$(loop_rw cr.hds)
	dm_create cr "0 $S parallels $lr -"
	dd if=/dev/urandom of=/dev/mapper/cr bs=64k count=4 oflag=direct status=none
	fallocate --punch-hole -o $C -l $((2 * C)) /dev/mapper/cr ||
		fail "control: fallocate --punch-hole on a table with no lower device"
	cmp -n $((2 * C)) -i $C:0 /dev/mapper/cr /dev/zero || fail "control: punched range not zero"
	note "control, no lower device: write_zeroes_max_bytes $(cat /sys/block/"$(blkdev cr)"/queue/write_zeroes_max_bytes)"
	finish cr "$lr"

	l=$(child cz)
	cp base.raw cz.ref
	# A cluster of the child's own (cluster 40), and data in cluster 41.
	head -c $((2 * C)) /dev/urandom > own.bin
	dd if=own.bin of=/dev/mapper/cz bs=64k seek=40 oflag=direct status=none
	dd if=own.bin of=cz.ref bs=64k seek=40 conv=notrunc status=none
	# Two whole clusters over base data, the child's cluster 40, part
	# of cluster 5 (base data) and part of cluster 41 (its own).
	for r in "0 $((2 * C))" "$((40 * C)) $C" "$((5 * C + 4096)) 8192" "$((41 * C + 512)) 3584"; do
		# shellcheck disable=SC2086 # two numbers: split them
		set -- $r
		blkdiscard -z -o "$1" -l "$2" /dev/mapper/cz 2> bz.err ||
			fail "blkdiscard -z -o $1 -l $2 on the child failed: $(cat bz.err)"
		dd if=/dev/zero of=cz.ref bs=512 seek=$(($1 / 512)) count=$(($2 / 512)) conv=notrunc status=none
		cmp -n "$2" -i "$1:0" /dev/mapper/cz /dev/zero || fail "$1+$2 does not read as zeros after blkdiscard -z"
	done
	cmp /dev/mapper/cz cz.ref || fail "the child reads differently from the reference after the zeroouts"
	# fallocate --punch-hole on a block device is a zeroout that may not
	# fall back to writing zero pages: WRITE_ZEROES or nothing.
	fallocate --punch-hole -o $((8 * C)) -l $((2 * C)) /dev/mapper/cz 2> ph.err ||
		fail "fallocate --punch-hole (zeroout, no fallback) on the child failed: $(cat ph.err)"
	dd if=/dev/zero of=cz.ref bs=64k seek=8 count=2 conv=notrunc status=none
	cmp /dev/mapper/cz cz.ref || fail "the child reads differently from the reference after the punch-hole"
	wz=$(cat /sys/block/"$(blkdev cz)"/queue/write_zeroes_max_bytes)
	note "child: write_zeroes_max_bytes $wz, allocated $(alloc cz)"
	[ "$wz" -gt 0 ] || fail "the child does not offer WRITE_ZEROES (write_zeroes_max_bytes 0)"
	finish cz "$l"
	qemu-img compare -q --image-opts \
		"driver=parallels,file.filename=cz.hds,backing.driver=parallels,backing.file.filename=base.hds" \
		"driver=raw,file.filename=cz.ref" || fail "the child image (over base.hds) differs from the reference"
}

run_case blkdiscard
run_case mkfs
run_case fstrim
run_case zeroout
cases_done
