#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Faults under the image device: an error table swapped in mid-workload,
# dm-flakey with error_writes and with drop_writes.  Bios fail with EIO (no
# kernel warning: the harness checks), a failed commit puts the table in
# the error state, the device can always be removed, the image stays
# structurally sound, and data flushed before the fault reads back.
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

# Flushed data first, on every image: 4 MiB at 1 MiB.
prepare() {
	qemu-img create -q -f parallels -o cluster_size=64k "$1" 32M
	truncate -s 96M "$1"
}

# 1. An error table swapped under the image device.
prepare e.hds
l=$(loop_rw e.hds)
n=$(blockdev --getsz "$l")
dm_create e-img "0 $n linear $l 0"
# No periodic commit: the change below must still be uncommitted at the fault.
dm_create e "0 65536 parallels /dev/mapper/e-img - 1 commit_interval_ms:3600000"
head -c $((4 << 20)) /dev/urandom > flushed
dd if=flushed of=/dev/mapper/e bs=1M seek=1 oflag=direct conv=fsync status=none
dd if=/dev/urandom of=/dev/mapper/e bs=64k count=1 seek=300 oflag=direct status=none
dmsetup load e-img --table "0 $n error"
dmsetup resume e-img
expect_fail dd if=/dev/urandom of=/dev/mapper/e bs=64k count=4 seek=200 oflag=direct status=none
expect_fail python3 -c 'import os; os.fsync(os.open("/dev/mapper/e", os.O_WRONLY))'
expect_eq "$(state e)" error "state after a failed commit"
expect_fail dd if=/dev/zero of=/dev/mapper/e bs=4k count=1 oflag=direct status=none
dm_remove e
dm_remove e-img
losetup -d "$l"
sound e.hds
l=$(loop_ro e.hds)
dm_create e "0 65536 parallels $l -" --readonly
cmp -n $((4 << 20)) -i $((1 << 20)):0 /dev/mapper/e flushed || fail "flushed data lost after the error table"
dm_remove e
losetup -d "$l"
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
done
