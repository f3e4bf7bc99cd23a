#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Faults under the image device: an error table swapped in mid-workload,
# dm-flakey with error_writes and with drop_writes.  Bios fail with EIO (no
# kernel warning: the harness checks), a failed commit puts the table in
# the error state, the device can always be removed, the image stays
# structurally sound, and data flushed before the fault reads back.
#
# No BAT entry may point at data that was never written: the image's free
# tail is poisoned first (tests/tools/poison.py), so a cluster the target
# made reachable without its fill or data reaching the disk still reads as
# poison.  That is checked strictly where the disk tells the truth (error
# table, error_writes) and where it lies in a way the target can be held
# to: once drop_writes starts for good, nothing later lands, so what is on
# disk is what a commit left before it.  With drop_writes coming and going,
# a BAT write that lands after a dropped fill is the disk's lie, not the
# target's: there poisoned clusters are only counted.
# vm-timeout: 600
set -eu
. "$SRC/tests/vm/lib.sh"

tools=$SRC/tests/tools
state() { dmsetup status "$1" | awk '{ print $7 }'; }

# sound IMAGE: structure and qemu-img check after an in_use repair.
sound() {
	local rc=0
	python3 "$tools/check-image.py" "$1" || fail "$1: structure"
	cp "$1" repaired.hds
	python3 "$tools/patch-image.py" repaired.hds in_use=0x312e3276
	qemu-img check -q -f parallels repaired.hds >/dev/null 2>&1 || rc=$?
	[ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "$1: qemu-img check exit $rc"
}

# unpoisoned IMAGE: no BAT entry points at a never-written cluster.
unpoisoned() {
	python3 "$tools/poison.py" check "$1" || fail "$1: a BAT entry points at never-written data"
}

# prepare IMAGE: 32 MiB virtual, 64 KiB clusters, room to grow, poisoned.
prepare() {
	qemu-img create -q -f parallels -o cluster_size=64k "$1" 32M
	truncate -s 96M "$1"
	python3 "$tools/poison.py" fill "$1" $((40 << 20)) >/dev/null
}

# flushed_data DEV: 4 MiB at 1 MiB, fsync'd (the file "flushed" keeps it).
flushed_data() {
	[ -e flushed ] || head -c $((4 << 20)) /dev/urandom > flushed
	dd if=flushed of="$1" bs=1M seek=1 oflag=direct conv=fsync status=none
}

# flushed_back IMAGE WHAT: the flushed data reads back through a ro table.
flushed_back() {
	local l
	l=$(loop_ro "$1")
	dm_create chk "0 65536 parallels $l -" --readonly
	cmp -n $((4 << 20)) -i $((1 << 20)):0 /dev/mapper/chk flushed ||
		fail "flushed data lost after $2"
	dm_remove chk
	losetup -d "$l"
}

# writer DEV FIRST [fsync]: 4 KiB writes at FIRST + 0..4 MiB (4 KiB blocks),
# fsync'd or not, until one fails; prints how many went through.
writer() {
	local i=0
	while dd if=/dev/urandom of="$1" bs=4k count=1 seek=$(($2 + i * 17 % 1024)) \
		oflag=direct ${3:+conv=fsync} status=none 2>/dev/null; do
		i=$((i + 1))
	done
	echo "$i"
}

# 1. An error table swapped under the image device in the middle of writes.
prepare e.hds
l=$(loop_rw e.hds)
n=$(blockdev --getsz "$l")
dm_create e-img "0 $n linear $l 0"
# No periodic commit: the changes below must still be uncommitted at the fault.
dm_create e "0 65536 parallels /dev/mapper/e-img - 1 commit_interval_ms:3600000"
flushed_data /dev/mapper/e
# A writer overwriting allocated clusters (8..12 MiB), no flushes.
dd if=/dev/urandom of=/dev/mapper/e bs=1M count=4 seek=8 oflag=direct conv=fsync status=none
writer /dev/mapper/e 2048 > writer.out &
wpid=$!
# Uncommitted at the fault: a whole new cluster and a filled one.
dd if=/dev/urandom of=/dev/mapper/e bs=64k count=1 seek=100 oflag=direct status=none
dd if=/dev/urandom of=/dev/mapper/e bs=4k count=1 seek=$((13 << 8)) oflag=direct status=none
sleep 1
dmsetup load e-img --table "0 $n error"
dmsetup resume e-img
wait $wpid || true
note "error table: the writer got $(cat writer.out) writes through before EIO"
[ "$(cat writer.out)" -gt 0 ] || fail "the writer wrote nothing before the fault"
expect_err 'Input/output error' dd if=/dev/urandom of=/dev/mapper/e bs=64k count=4 seek=200 oflag=direct status=none
expect_err 'Input/output error' python3 -c 'import os; os.fsync(os.open("/dev/mapper/e", os.O_WRONLY))'
expect_eq "$(state e)" error "state after a failed commit"
expect_err 'Input/output error' dd if=/dev/zero of=/dev/mapper/e bs=4k count=1 oflag=direct status=none
dm_remove e
dm_remove e-img
losetup -d "$l"
sound e.hds
unpoisoned e.hds
flushed_back e.hds "the error table"
note "error table: ok"

# 2. dm-flakey: writes fail (error_writes) or vanish (drop_writes) at times.
for mode in error_writes drop_writes; do
	prepare "f-$mode.hds"
	l=$(loop_rw "f-$mode.hds")
	n=$(blockdev --getsz "$l")
	dm_create "f-img" "0 $n flakey $l 0 3 2 1 $mode"
	dm_create f "0 65536 parallels /dev/mapper/f-img -"
	errors=0
	for i in $(seq 1 40); do
		dd if=/dev/urandom of=/dev/mapper/f bs=16k count=1 seek=$((RANDOM % 2000)) \
			oflag=direct conv=fsync status=none 2>/dev/null || errors=$((errors + 1))
		sleep 0.1
	done
	note "$mode: $errors of 40 writes failed, state $(state f)"
	[ "$mode" = drop_writes ] || [ $errors -gt 0 ] || fail "error_writes: no write failed"
	dm_remove f
	dm_remove f-img
	losetup -d "$l"
	sound "f-$mode.hds"
	if [ "$mode" = error_writes ]; then
		unpoisoned "f-$mode.hds"
	else
		p=$(python3 "$tools/poison.py" check "f-$mode.hds" | grep -c 'never-written' || true)
		note "drop_writes, coming and going: $p clusters mapped at dropped data (the disk lied)"
	fi
done

# 3. drop_writes for good, mid-workload: every write from then on is
# acknowledged and lost, so the image must be what the last commit before
# it left: sound, flushed data there, no BAT entry at a cluster whose fill
# was dropped.
prepare d.hds
l=$(loop_rw d.hds)
n=$(blockdev --getsz "$l")
dm_create d-img "0 $n linear $l 0"
dm_create d "0 65536 parallels /dev/mapper/d-img -"
flushed_data /dev/mapper/d
dd if=/dev/urandom of=/dev/mapper/d bs=4k count=1 seek=$((13 << 8)) oflag=direct status=none
(for i in $(seq 0 39); do
	dd if=/dev/urandom of=/dev/mapper/d bs=4k count=1 seek=$((4096 + i * 97 % 4096)) \
		oflag=direct conv=fsync status=none || exit 1
done) &
wpid=$!
sleep 2
dmsetup load d-img --table "0 $n flakey $l 0 0 1 1 drop_writes"
dmsetup resume d-img
wait $wpid || fail "a write failed under drop_writes"
note "drop_writes for good: state $(state d) after the writer"
dm_remove d
dm_remove d-img
losetup -d "$l"
sound d.hds
unpoisoned d.hds
flushed_back d.hds "drop_writes"
note "drop_writes for good: ok"
