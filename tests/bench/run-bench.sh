#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make bench: boot Debian's kernel KVER in QEMU (tests/vm/run-vm.sh), run
# tests/bench/b-fio.sh there, print its table and save it.
#
#   tests/bench/run-bench.sh --kver KVER [--runtime SECS] [--repeat N] [--parts P] [--out FILE]
#
#   --runtime SECS  seconds per fio run (default 5)
#   --repeat N      runs per workload and target (default 5)
#   --out FILE      where the table goes (default build/bench-<kver>.txt)
#   --parts P       "allocated allocating" (default), or one of them
#
# The guest's log is build/<kver>/bench/b-fio.log.  Nothing is printed as
# a result if the run failed (a fio error, a qemu-img check of an image, a
# kernel warning): the exit status is then 1.
set -u
export LC_ALL=C
cd "$(dirname "$0")/../.." || exit 1

kver='' runtime=5 repeat=5 out='' parts='allocated allocating'
while [ $# -gt 0 ]; do
	case $1 in
	--kver) kver=${2-}; shift ;;
	--runtime) runtime=${2-}; shift ;;
	--repeat) repeat=${2-}; shift ;;
	--out) out=${2-}; shift ;;
	--parts) parts=${2-}; shift ;;
	*) echo "usage: $0 --kver KVER [--runtime SECS] [--repeat N] [--parts P] [--out FILE]" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$kver" ] || { echo "$0: no --kver (are the kernel headers installed?)" >&2; exit 2; }
case $runtime$repeat in *[!0-9]*|'') echo "$0: --runtime and --repeat take numbers" >&2; exit 2 ;; esac
out=${out:-build/bench-$kver.txt}
R=build/$kver/bench
log=$R/b-fio.log

mkdir -p "build/$kver" || exit 1
# Read by b-fio.sh in the guest, which sees this tree at the same path.
printf 'BENCH_RUNTIME=%s\nBENCH_REPEAT=%s\nBENCH_PARTS="%s"\n' "$runtime" "$repeat" "$parts" \
	> "build/$kver/bench.env"

load0=$(uptime)
tests/vm/run-vm.sh --kver "$kver" --results "$R" tests/bench/b-fio.sh
rc=$?
load1=$(uptime)
if [ $rc -ne 0 ] || ! grep -q '^=== end ===' "$log" 2>/dev/null; then
	echo "bench on $kver failed: no results (see $log)" >&2
	exit 1
fi
{
	echo "make bench, $(date -u '+%Y-%m-%d %H:%M UTC'), host: $(nproc) CPUs"
	echo "host load before: ${load0#*load average: }, after: ${load1#*load average: }"
	sed -n '/^=== bench results ===$/,/^=== end ===$/p' "$log" | sed '1d;$d'
	echo
	echo "per run (guest log $log):"
	grep -E '^# (fill of|randread|randwrite|seqalloc|randalloc|  [0-9]+/[0-9]+ clusters)' "$log"
} > "$out"
echo
cat "$out"
echo "(saved in $out)"
