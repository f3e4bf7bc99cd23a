#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The benchmark behind "make bench" (tests/bench/run-bench.sh): runs in the
# VM like a test (tests/vm/run-vm.sh tests/bench/b-fio.sh), but is not one:
# it is not a tests/vm/t-*.sh, so make check never runs it.
#
# fio on dm-parallels side by side with dm-linear, both over a loop device
# (direct I/O) over a file on the guest's /tmp (ext4 on a virtio disk):
#   allocated    4k randread and 4k randwrite, qd16, time based, on a fully
#                written 1 GiB image (1M clusters) / a fully written raw file
#   allocating   1M sequential write qd8, and 4k randwrite qd16 with an fsync
#                every 32 writes, each run on a fresh empty image (1M
#                clusters, and 64k for the random one) / a fresh sparse raw
#                file: the first writes, allocation included
# Each workload runs BENCH_REPEAT times, dm-linear and parallels alternately;
# the table gives the medians and median(parallels) / median(dm-linear).
# Every parallels image is checked with qemu-img check afterwards: a broken
# run fails instead of reporting numbers.
#
# Settings: $SRC/build/$KVER/bench.env (written by run-bench.sh), if there:
#   BENCH_RUNTIME  seconds per fio run (default 5)
#   BENCH_REPEAT   runs per workload and target (default 5)
#   BENCH_PARTS    "allocated allocating" (default), or one of them
# vm-timeout: 1800
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd fio qemu-img python3 dmsetup losetup
BENCH_RUNTIME=5 BENCH_REPEAT=5 BENCH_PARTS="allocated allocating"
# shellcheck disable=SC1090,SC1091 # written by run-bench.sh
[ ! -f "$SRC/build/$KVER/bench.env" ] || . "$SRC/build/$KVER/bench.env"
rt=$BENCH_RUNTIME reps=$BENCH_REPEAT
summary=$SRC/tests/bench/fio-summary.py
results=$T/results
: > "$results"
MiB=2048	# sectors

fio_run() { # fio_run WORKLOAD TARGET REP DEV FIO-ARGS...: one run, recorded
	local wl=$1 target=$2 rep=$3 dev=$4 m
	shift 4
	fio --name="$wl" --filename="$dev" --ioengine=libaio --direct=1 \
		--numjobs=1 --randseed=4242 --output-format=json \
		--output="$T/$wl-$target-$rep.json" "$@" > "$T/fio.err" 2>&1 ||
		fail "fio $wl on $target: $(tail -n 5 "$T/fio.err")"
	m=$(python3 "$summary" metric "$T/$wl-$target-$rep.json")
	echo "$wl $target $rep $m" | cut -d' ' -f1-5 >> "$results"
	note "$wl $target #$rep: $m (IOPS MiB/s ios)"
	last_ios=${m##* }
}

prl_check() { # prl_check NAME LOOP FILE: tear down, truncate, qemu-img check
	local end
	end=$(dmsetup status "$1" | awk '{ print $6 }')
	dm_remove "$1"
	losetup -d "$2"
	truncate -s $((end * 512)) "$3"
	qemu-img check -q -f parallels "$3" ||
		fail "qemu-img check -f parallels $3 after the run: status $?"
}

part() { case " $BENCH_PARTS " in *" $1 "*) return 0 ;; esac; return 1; }

# --- allocated clusters: both devices written whole first -------------------
if part allocated; then
size=1024	# MiB
qemu-img create -q -f parallels -o cluster_size=1M full.hds ${size}M
truncate -s $((size + 64))M full.hds
truncate -s ${size}M full.raw
lp=$(loop_rw full.hds)
ll=$(loop_rw full.raw)
dm_create bprl "0 $((size * MiB)) parallels $lp -"
dm_create blin "0 $((size * MiB)) linear $ll 0"
for d in blin bprl; do
	t0=$(date +%s.%N)
	dd if=/dev/zero of=/dev/mapper/$d bs=1M count=$size oflag=direct status=none
	note "fill of $d (1M sequential, qd1, allocating): $(echo "$(date +%s.%N) $t0" |
		awk -v s=$size '{ printf "%.1f s, %.0f MiB/s", $1 - $2, s / ($1 - $2) }')"
done
dmsetup message bprl 0 commit
st=$(dmsetup status bprl | awk '{ print $4 }')
expect_eq "$st" "$size/$size" "allocated clusters after the fill"

for rep in $(seq "$reps"); do
	order="linear parallels"
	[ $((rep % 2)) -eq 1 ] || order="parallels linear"
	for wl in randread randwrite; do
		for target in $order; do
			dev=/dev/mapper/blin
			[ "$target" = linear ] || dev=/dev/mapper/bprl
			fio_run $wl "$target" "$rep" "$dev" --rw=$wl --bs=4k \
				--iodepth=16 --norandommap --time_based \
				--runtime="$rt" --ramp_time=1
		done
	done
done
prl_check bprl "$lp" full.hds
dm_remove blin
losetup -d "$ll"
rm -f full.hds full.raw
fi

# --- allocating: every run on a fresh image / a fresh sparse file -----------
vsize=8192	# MiB, more than a run writes, so it keeps allocating
alloc_run() { # alloc_run WORKLOAD TARGET REP CLUSTER FIO-ARGS...
	local wl=$1 target=$2 rep=$3 cl=$4 l
	shift 4
	if [ "$target" = linear ]; then
		truncate -s ${vsize}M new.raw
		l=$(loop_rw new.raw)
		dm_create bnew "0 $((vsize * MiB)) linear $l 0"
		fio_run "$wl" linear "$rep" /dev/mapper/bnew "$@"
		dm_remove bnew
		losetup -d "$l"
		rm -f new.raw
		return
	fi
	qemu-img create -q -f parallels -o cluster_size="$cl" new.hds ${vsize}M
	truncate -s $((vsize + 64))M new.hds
	l=$(loop_rw new.hds)
	dm_create bnew "0 $((vsize * MiB)) parallels $l -"
	fio_run "$wl" parallels "$rep" /dev/mapper/bnew "$@"
	note "  $(dmsetup status bnew | awk '{ print $4 }') clusters allocated by $last_ios writes"
	prl_check bnew "$l" new.hds
	rm -f new.hds
}

for rep in $(seq "$reps"); do
	part allocating || break
	order="linear parallels"
	[ $((rep % 2)) -eq 1 ] || order="parallels linear"
	for target in $order; do
		alloc_run seqalloc "$target" "$rep" 1M --rw=write --bs=1M \
			--iodepth=8 --size=${vsize}M --runtime="$rt"
	done
	order="linear parallels parallels64k"
	[ $((rep % 2)) -eq 1 ] || order="parallels64k parallels linear"
	for target in $order; do
		case $target in
		linear) alloc_run randalloc linear "$rep" - \
			--rw=randwrite --bs=4k --iodepth=16 --fsync=32 \
			--size=${vsize}M --runtime="$rt" ;;
		parallels) alloc_run randalloc parallels "$rep" 1M \
			--rw=randwrite --bs=4k --iodepth=16 --fsync=32 \
			--size=${vsize}M --runtime="$rt" ;;
		parallels64k) alloc_run randalloc64k parallels "$rep" 64k \
			--rw=randwrite --bs=4k --iodepth=16 --fsync=32 \
			--size=${vsize}M --runtime="$rt" ;;
		esac
	done
done

echo "=== bench results ==="
echo "fio $(fio --version | sed 's/^fio-//'), kernel $(uname -r), $(nproc) vCPUs under QEMU TCG (software emulation):"
echo "absolute numbers are low and noisy; only the ratio to dm-linear means anything."
echo "Both targets on a loop device (direct I/O) over a file on ext4 on a virtio disk;"
echo "${rt} s per run, median of $reps runs per side, the two sides alternating."
echo
python3 "$summary" table "$results"
echo "=== end ==="
