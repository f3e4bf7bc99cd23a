#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The fail mode, with the default commit interval (1000 ms): the image
# device's metadata region (header and BAT) starts failing under a
# writable table (dm-linear under it, swapped for an error segment there),
# while data writes still land.  A new cluster is written, so the BAT
# changes in memory and its commit fails.  Then:
#   - status says error, and writes fail with EIO;
#   - the fail mode is entered once: over the next 10 s the target logs at
#     most one line per second, at most one "commit failed" line over the
#     whole episode, and sends no more I/O to the image device (no commit
#     retries: its I/O counters stay still);
#   - the device can be removed;
#   - the image is recoverable: prldisk check --repair (exit 0, 2 or 3),
#     then prldisk check exits 0, qemu-img check passes, and the cluster
#     written and fsynced before the fault reads back;
#   - or, without removing it: once the image device works again, a
#     dmsetup reload of the same line and a resume bring the table back to
#     rw; it writes, and the image passes qemu-img check.
# vm-timeout: 300
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img

P=$SRC/userspace/prldisk
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"
C=65536
state() { dmsetup status "$1" | awk '{ print $7 }'; }
blkdev() { dmsetup info -c --noheadings -o blkdevname "$1"; }
# The kernel log lines of the target (or naming its device) since the mark.
target_lines() { dmesg_since_mark | grep -E "parallels|$(blkdev e)|$(dmsetup info -c --noheadings -o major,minor --separator : e)" || true; }
# I/O the image device was sent: reads and writes completed, in flight.
img_io() { awk '{ print $1, $5, $9, $16 }' /sys/block/"$(blkdev e-img)"/stat; }

qemu-img create -q -f parallels -o cluster_size=64k e.hds 32M
truncate -s 64M e.hds
doff=$(od -An -tu4 -j48 -N4 e.hds | tr -d ' ')	# data_off, in sectors
l=$(loop_rw e.hds)
n=$(blockdev --getsz "$l")
dm_create e-img "0 $n linear $l 0"
dm_create e "0 65536 parallels /dev/mapper/e-img -"

# Cluster 3: written and committed before the fault.
head -c $C /dev/urandom > c3.bin
dd if=c3.bin of=/dev/mapper/e bs=64k seek=3 oflag=direct conv=fsync status=none

# The header and BAT (below data_off) fail from now on; data still lands.
dmesg_mark
printf '0 %s error\n%s %s linear %s %s\n' "$doff" "$doff" $((n - doff)) "$l" "$doff" |
	dmsetup load e-img
dmsetup resume e-img
# A new cluster: its data lands, its BAT entry cannot be committed.
dd if=/dev/urandom of=/dev/mapper/e bs=64k count=1 seek=7 oflag=direct status=none ||
	note "the write of a new cluster failed at once"
for _ in $(seq 1 50); do
	[ "$(state e)" != error ] || break
	sleep 0.2
done
expect_eq "$(state e)" error "state after the failed commit"
note "status: $(dmsetup status e)"

# Settled: over 10 s, at most one line a second, and no I/O to the image.
k0=$(target_lines | wc -l)
io0=$(img_io)
sleep 10
k1=$(target_lines | wc -l)
io1=$(img_io)
note "kernel log since the fault:"
target_lines | uniq -c | sed 's/^/#   /' >&2
note "image device I/O (reads, writes, in flight, flushes): $io0 -> $io1"
commits=$(target_lines | grep -ci 'commit' || true)
[ "$commits" -le 1 ] || fail "$commits kernel log lines about a failed commit: the commit is retried"
[ $((k1 - k0)) -le 10 ] || fail "$((k1 - k0)) kernel log lines in the 10 s after the fault settled"
expect_eq "$io1" "$io0" "image device I/O counters over the 10 s in the error state"

expect_err 'Input/output error' dd if=/dev/urandom of=/dev/mapper/e bs=4k count=1 seek=$((3 * 16)) oflag=direct status=none
cmp c3.bin <(dd if=/dev/mapper/e bs=64k skip=3 count=1 iflag=direct status=none) ||
	fail "cluster 3 does not read back from the failed table"

dm_remove e
dmsetup load e-img --table "0 $n linear $l 0"
dmsetup resume e-img
dm_remove e-img
losetup -d "$l"

# The way back: prldisk check --repair.
rc=0
"$P" check --repair e.hds > repair.out 2>&1 || rc=$?
sed 's/^/# repair: /' repair.out >&2
case $rc in 0|2|3) ;; *) fail "prldisk check --repair exit $rc" ;; esac
rc=0
"$P" check e.hds > check.out 2>&1 || rc=$?
[ $rc -eq 0 ] || fail "prldisk check after the repair: exit $rc: $(head -c 300 check.out)"
qemu-img check -q -f parallels e.hds || fail "qemu-img check after the repair"
qemu-img convert -f parallels -O raw e.hds e.raw
cmp c3.bin <(dd if=e.raw bs=64k skip=3 count=1 status=none) ||
	fail "cluster 3, committed before the fault, lost after the repair"

# The other way back, without taking the device down: make the image
# device work again, then reload the table with the same line.  The new
# table reads the image as the last good commit left it and takes it over.
truncate -s 64M e.hds		# the repair cut it to its end
l=$(loop_rw e.hds)
n=$(blockdev --getsz "$l")
dm_create e-img "0 $n linear $l 0"
dm_create e "0 65536 parallels /dev/mapper/e-img -"
dd if=c3.bin of=/dev/mapper/e bs=64k seek=4 oflag=direct conv=fsync status=none
printf '0 %s error\n%s %s linear %s %s\n' "$doff" "$doff" $((n - doff)) "$l" "$doff" |
	dmsetup load e-img
dmsetup resume e-img
dd if=/dev/urandom of=/dev/mapper/e bs=64k count=1 seek=9 oflag=direct status=none || true
for _ in $(seq 1 50); do
	[ "$(state e)" != error ] || break
	sleep 0.2
done
expect_eq "$(state e)" error "state after the second failed commit"
expect_eq "$(dmsetup status e | awk '{ print $10 }')" "commit:-5" "what failed, in the status"
dmsetup load e-img --table "0 $n linear $l 0"
dmsetup resume e-img
table=$(dmsetup table e | cut -d' ' -f3-)
dmsetup reload e --table "0 65536 $table" || fail "reload of the failed table"
dmsetup resume e || fail "resume after the reload"
expect_eq "$(state e) $(dmsetup status e | awk '{ print $10 }')" "rw -" "state after the reload"
head -c $C /dev/urandom > c11.bin
dd if=c11.bin of=/dev/mapper/e bs=64k seek=11 oflag=direct conv=fsync status=none ||
	fail "a write after the reload"
cmp c3.bin <(dd if=/dev/mapper/e bs=64k skip=4 count=1 iflag=direct status=none) ||
	fail "cluster 4, committed before the fault, after the reload"
end=$(dmsetup status e | awk '{ print $6 }')
dm_remove e
dm_remove e-img
losetup -d "$l"
truncate -s $((end * 512)) e.hds
rc=0
qemu-img check -q -f parallels e.hds || rc=$?
[ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "qemu-img check after the reload (leaks allowed): $rc"
qemu-img convert -f parallels -O raw e.hds e.raw
cmp c11.bin <(dd if=e.raw bs=64k skip=11 count=1 status=none) ||
	fail "cluster 11, written after the reload, not in the image"
