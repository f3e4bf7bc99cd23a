#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# prldisk's offline tests, on the host (no dm in the host kernel; t-80 and
# t-81 boot a whole VM):
#   tests/host/run.sh [TEST...]
# Each tests/host/t-*.sh runs in a fresh, empty folder with SRC (the repo)
# and PRLDISK (the built tool) set, and may source tests/vm/lib.sh for
# note/fail/expect_eq.  Exit status 0 pass, 4 skip, else fail.  One TAP
# line per test, then "N passed, N failed[, N skipped]".
set -u
export LC_ALL=C
SRC=$(cd "$(dirname "$0")/../.." && pwd)
export SRC PRLDISK=$SRC/userspace/prldisk
W=$SRC/build/host
mkdir -p "$W"

tests=()
if [ $# -gt 0 ]; then
	for t; do t=${t##*/}; tests+=("${t%.sh}"); done
else
	for f in "$SRC"/tests/host/t-*.sh; do tests+=("$(basename "$f" .sh)"); done
fi

n=0 npass=0 nfail=0 nskip=0
for t in "${tests[@]}"; do
	n=$((n + 1))
	d=$W/$t
	rm -rf "$d" && mkdir -p "$d"
	t0=$(date +%s)
	(cd "$d" && T=$d TMPDIR=$d timeout -k 5 600 bash "$SRC/tests/host/$t.sh") \
		> "$W/$t.log" 2>&1
	rc=$?
	secs=$(($(date +%s) - t0))
	case $rc in
	0) npass=$((npass + 1)); echo "ok $n - host/$t (${secs}s)"; rm -rf "$d" ;;
	4) nskip=$((nskip + 1))
	   echo "ok $n - host/$t # SKIP $(sed -n 's/^# SKIP:* *//p' "$W/$t.log" | tail -n 1)" ;;
	*) nfail=$((nfail + 1)); echo "not ok $n - host/$t # exit status $rc"
	   tail -n 40 "$W/$t.log" | sed 's/^/# /' ;;
	esac
done
echo "1..$n"
echo "$npass passed, $nfail failed$([ $nskip -eq 0 ] || echo ", $nskip skipped")"
[ $nfail -eq 0 ]
