#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Crash consistency, proven by replay: dm-log-writes under the image device
# records every write as it reached the disk; a seeded workload of writes,
# each step ended by fsync and a mark, runs through a parallels table (with
# a lower device, so fills matter, and without one); the log is then
# replayed onto the original image up to every FLUSH, FUA and mark entry and
# each such crash point is checked by tests/tools/crashtest.py: image sound
# (no BAT entry outside the file, into metadata, duplicated, or at a
# never-written cluster: the image's free tail is poisoned first), every
# write acknowledged before a completed flush present, nothing else but old
# or newer data.  t-26-crash-ext4 does the same with ext4 and e2fsck.
# vm-timeout: 900
set -eu
. "$SRC/tests/vm/lib.sh"

# run NAME CLUSTER STEPS [LOWER]
run() {
	local name=$1 cluster=$2 steps=$3 lower=${4-} ld=- l lg isize
	qemu-img create -q -f parallels -o cluster_size="$cluster" "$name.hds" 16M
	truncate -s 48M "$name.hds"
	# Never-written clusters read as poison: a BAT entry at one is caught.
	python3 "$SRC/tests/tools/poison.py" fill "$name.hds" $((17 << 20)) >/dev/null
	cp --sparse=always "$name.hds" "$name.orig"
	truncate -s 512M "$name.log"
	[ -z "$lower" ] || ld=$(loop_ro "$lower")
	l=$(loop_rw "$name.hds")
	lg=$(loop_rw "$name.log")
	isize=$(blockdev --getsz "$l")
	dm_create "$name-lw" "0 $isize log-writes $l $lg"
	dm_create "$name" "0 32768 parallels /dev/mapper/$name-lw $ld"
	python3 "$SRC/tests/tools/crashtest.py" workload "/dev/mapper/$name" "$name-lw" \
		"$name.ops" 5 "$steps" "$cluster"
	dm_remove "$name"
	dm_remove "$name-lw"
	[ -z "$lower" ] || losetup -d "$ld"
	python3 "$SRC/tests/tools/crashtest.py" check "$name.log" "$name.orig" "${lower:--}" \
		"$name.ops" 32768 poisoned
	note "$name: ok"
}

head -c $((12 << 20)) /dev/urandom > lower.raw
if [ "${1-}" = long ]; then	# t-long-crash
	run crash-lower 65536 25 lower.raw
	run crash-zero 1048576 25
else
	run crash-lower 65536 6 lower.raw
fi
