#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Crash consistency under a raw fio workload with fsync, proven by replay:
# dm-log-writes under the image device records fio's rounds of random
# writes (verify headers, an fsync every 8 writes; rewrites of allocated
# clusters, 4k writes into new 64k clusters that need a fill, whole-cluster
# writes), a mark after each round.  tests/tools/crashfio.py replays the
# log onto the poisoned original up to FLUSH/FUA/mark entries and checks
# each point: the image sound (no BAT entry outside the file, into
# metadata, duplicated, or at never-written data; qemu-img check clean but
# for leaks) and fio --verify_only of every completed round that the round
# in flight does not overwrite.  The short form checks every mark and ~3
# of the other points; t-long-crash about 60.
# vm-timeout: 900
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd fio
tools=$SRC/tests/tools
max=3
[ "${1-}" != long ] || max=60

qemu-img create -q -f parallels -o cluster_size=65536 fio.hds 16M
truncate -s 48M fio.hds
python3 "$tools/poison.py" fill fio.hds $((17 << 20)) >/dev/null
cp --sparse=always fio.hds fio.orig
truncate -s 512M fio.log
l=$(loop_rw fio.hds)
lg=$(loop_rw fio.log)
dm_create fio-lw "0 $(blockdev --getsz "$l") log-writes $l $lg"
# Commits only when a flush asks for one: a flush that did not wait shows.
dm_create fio "0 32768 parallels /dev/mapper/fio-lw - 1 commit_interval_ms:3600000"
python3 "$tools/crashfio.py" workload /dev/mapper/fio fio-lw
note "status: $(dmsetup status fio)"
dm_remove fio
dm_remove fio-lw
t0=$(date +%s)
python3 "$tools/crashfio.py" check fio.log fio.orig 32768 "$max"
note "replay and checks $(($(date +%s) - t0)) s"
