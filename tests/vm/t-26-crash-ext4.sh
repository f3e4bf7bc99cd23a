#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Crash consistency of ext4 on a parallels table, proven by replay:
# dm-log-writes under the image device records every write as it reached
# the disk while mkfs.ext4 and an fsync-heavy workload run (small files
# written and fsync'd, bigger ones, atomic replace by rename, unlink,
# rename across directories, appends, in-place overwrites, directory
# fsyncs; a mark after each step, whose whole tree is durable then).  The
# image's free tail is poisoned first.  The log is then replayed onto the
# original image up to FLUSH/FUA/mark entries, and at each such crash point
# tests/tools/crashfs.py checks: the image is sound (no BAT entry outside
# the file, into metadata, duplicated, or at a never-written = poisoned
# cluster; qemu-img check clean but for leaks), and on a throwaway copy
# through a read-write table the file system mounts (journal recovery),
# every file durable at the last mark is there with its content (files the
# next step touches: old or new), nothing removed comes back, and after
# umount e2fsck -fn is clean.  The short form checks every mark and ~10 of
# the other points; t-long-crash checks every point of a longer run.
# vm-timeout: 900
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd mkfs.ext4 e2fsck
tools=$SRC/tests/tools

# The short form commits only when a flush or FUA asks for it, so any flush
# that does not wait for its commit shows; the long form keeps the default
# one-second commits racing with the allocations, and checks every point.
steps=6 max=10 seed=7 opts=" 1 commit_interval_ms:3600000"
[ "${1-}" != long ] || steps=8 max=0 seed=11 opts=

size=$((96 << 11))	# sectors: 96 MiB, small enough for a 4 MiB journal
qemu-img create -q -f parallels -o cluster_size=65536 fs.hds 96M
truncate -s 160M fs.hds
python3 "$tools/poison.py" fill fs.hds $((24 << 20))
cp --sparse=always fs.hds fs.orig
truncate -s 1G fs.log
l=$(loop_rw fs.hds)
lg=$(loop_rw fs.log)
dm_create fs-lw "0 $(blockdev --getsz "$l") log-writes $l $lg"
dm_create fs "0 $size parallels /dev/mapper/fs-lw -$opts"
mkfs.ext4 -q -b 4096 /dev/mapper/fs
dmsetup message fs-lw 0 mark mkfs
mkdir mnt
mount -t ext4 /dev/mapper/fs mnt
t0=$(date +%s)
python3 "$tools/crashfs.py" workload mnt fs-lw fs.state "$seed" "$steps"
umount mnt
note "workload $(($(date +%s) - t0)) s; status: $(dmsetup status fs)"
dm_remove fs
dm_remove fs-lw
t0=$(date +%s)
python3 "$tools/crashfs.py" check fs.log fs.orig - fs.state "$size" "$max"
note "replay and checks $(($(date +%s) - t0)) s"
