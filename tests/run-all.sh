#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Every test, as one TAP stream:
#   tests/run-all.sh [--long] --kver K [--kver K2 ...] [--core-kver K3 ...]
#   checkpatch      make checkpatch
#   K/sparse        make sparse KVER=K, for each kernel
#   unit            make -C userspace check (its TAP lines, renumbered)
#   host/<test>     tests/host/run.sh: prldisk offline, against QEMU and ploop
#   K/<test>        tests/vm/run-vm.sh --kver K, for each kernel (the first
#                   one runs in the background during unit and host); a
#                   --core-kver kernel runs only the tests in
#                   tests/vm/core.list (the target's own I/O paths), which
#                   keeps make check within CI's time; check-long runs all
# Ends with exactly one line "N passed, N failed[, N skipped]"; exit 1 if
# anything failed.  An empty or uninstalled kernel is a failure, not a skip.
set -u
shopt -s lastpipe	# so relay, at the end of a pipeline, counts in this shell
cd "$(dirname "$0")/.." || exit 1
LOGS=build/logs
mkdir -p "$LOGS"

long='' kvers=()
declare -A core=()	# kernels that run tests/vm/core.list only
while [ $# -gt 0 ]; do
	case $1 in
	--long) long=--long ;;
	--kver) kvers+=("${2-}"); shift ;;
	--core-kver) kvers+=("${2-}"); [ -z "${2-}" ] || core[${2}]=1; shift ;;
	*) echo "usage: $0 [--long] --kver K [--kver K2 ...] [--core-kver K ...]" >&2; exit 2 ;;
	esac
	shift
done

n=0 npass=0 nfail=0 nskip=0
tap() { # tap ok|skip|fail NAME [REASON]
	n=$((n + 1))
	case $1 in
	ok) npass=$((npass + 1)); echo "ok $n - $2" ;;
	skip) nskip=$((nskip + 1)); echo "ok $n - $2 # SKIP${3:+ $3}" ;;
	*) nfail=$((nfail + 1)); echo "not ok $n - $2${3:+ # $3}" ;;
	esac
}
comment() { sed 's/^/# /'; }

# relay PREFIX LOG: pass a sub-suite's TAP through, renumbered and named
# PREFIX/..., keeping "#" lines; everything goes to LOG.  Sets relayed_fail.
relay() {
	local l re='^(not )?ok [0-9]+( -)? ?(.*)$'
	relayed_fail=0
	while IFS= read -r l; do
		printf '%s\n' "$l" >> "$2"
		if [[ $l =~ $re ]]; then
			local not=${BASH_REMATCH[1]-} desc=${BASH_REMATCH[3]-}
			n=$((n + 1))
			if [ -n "$not" ]; then
				nfail=$((nfail + 1)) relayed_fail=$((relayed_fail + 1))
			elif [[ $desc =~ \#\ *[Ss][Kk][Ii][Pp] ]]; then
				nskip=$((nskip + 1))
			else
				npass=$((npass + 1))
			fi
			echo "${not}ok $n - $1$desc"
		elif [[ $l =~ ^[[:space:]]*# ]]; then
			printf '%s\n' "$l"
		fi	# the plan, the sub-summary and make's chatter: log only
	done
}

# check NAME CMD...: one test, pass if CMD exits 0; on failure, its output.
check() {
	local name=$1 log=$LOGS/${1//\//_}.log
	shift
	if "$@" > "$log" 2>&1; then
		tap ok "$name"
	else
		tap fail "$name" "$* failed"
		tail -n 40 "$log" | comment
	fi
}

start=$(date +%s)

check checkpatch make checkpatch

# The kernels: installed, and sparse-clean (sparse cleans and builds the
# module in the source tree, so it runs before any VM copies the sources).
[ ${#kvers[@]} -gt 0 ] || tap fail "kernels" "no --kver given"
vm_kvers=()
for k in "${kvers[@]}"; do
	if [ -z "$k" ]; then
		tap fail "kernel" "empty kernel version: are the 6.1 and 6.12 headers installed? (tests/install-deps.sh)"
		continue
	fi
	if [ ! -e "/boot/vmlinuz-$k" ] || [ ! -d "/lib/modules/$k/build" ]; then
		tap fail "$k" "kernel or headers for $k not installed (tests/install-deps.sh)"
		continue
	fi
	check "$k/sparse" make sparse KVER="$k"
	vm_kvers+=("$k")
done

# prldisk, for the host tests and the VM tests that use it.
built=1
make -C userspace > "$LOGS/userspace-build.log" 2>&1 || built=

# The first kernel's VM suite runs while the host tests do: the VM is
# mostly one busy vCPU, the host tests mostly one process, and there are
# two cores.  Its TAP lines are relayed once the host tests are done.
bg_pid='' bg_t0=''
if [ ${#vm_kvers[@]} -gt 0 ]; then
	: > "$LOGS/vm-${vm_kvers[0]}.raw"
	bg_t0=$(date +%s)
	[ -z "${core[${vm_kvers[0]}]-}" ] || echo "# the first kernel runs every test, whatever --core-kver said"
	tests/vm/run-vm.sh $long --kver "${vm_kvers[0]}" > "$LOGS/vm-${vm_kvers[0]}.raw" 2>&1 &
	bg_pid=$!
	trap 'kill "$bg_pid" 2>/dev/null' EXIT	# no VM outlives this run
	echo "# ${vm_kvers[0]}: VM suite started in the background"
fi

# Host unit tests.  A make that fails without saying "not ok" is one failure.
: > "$LOGS/unit.log"
make -C userspace check 2>&1 | relay unit/ "$LOGS/unit.log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ] && [ "$relayed_fail" -eq 0 ]; then
	tap fail unit "make -C userspace check exited $rc"
	tail -n 40 "$LOGS/unit.log" | comment
fi

# prldisk's offline tests on the host, against QEMU and ploop.
if [ -n "$built" ]; then
	: > "$LOGS/host.log"
	tests/host/run.sh 2>&1 | relay "" "$LOGS/host.log"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -ne 0 ] && [ "$relayed_fail" -eq 0 ]; then
		tap fail host "tests/host/run.sh exited $rc"
		tail -n 40 "$LOGS/host.log" | comment
	fi
else
	tap fail "host" "make -C userspace failed"
	tail -n 40 "$LOGS/userspace-build.log" | comment
fi

# vm_done K RC: a VM suite that failed without saying "not ok" is a failure.
vm_done() {
	if [ "$2" -ne 0 ] && [ "$relayed_fail" -eq 0 ]; then
		tap fail "$1/vm" "tests/vm/run-vm.sh exited $2"
		tail -n 40 "$LOGS/vm-$1.log" | comment
	fi
}
for k in "${vm_kvers[@]}"; do
	: > "$LOGS/vm-$k.log"
	if [ "$k" = "${vm_kvers[0]}" ]; then
		t0=$bg_t0
		tail -n +1 -f --pid="$bg_pid" "$LOGS/vm-$k.raw" | relay "" "$LOGS/vm-$k.log"
		wait "$bg_pid"
		rc=$?
	else
		t0=$(date +%s)
		sel=()
		[ -z "${core[$k]-}" ] || mapfile -t sel < <(grep -v '^#' tests/vm/core.list)
		[ -z "${core[$k]-}" ] || echo "# $k: the core tests only (tests/vm/core.list)"
		tests/vm/run-vm.sh $long --kver "$k" "${sel[@]}" 2>&1 | relay "" "$LOGS/vm-$k.log"
		rc=${PIPESTATUS[0]}
	fi
	vm_done "$k" "$rc"
	echo "# $k: VM suite took $(($(date +%s) - t0)) s"
done

echo "# all: $(($(date +%s) - start)) s"
echo "1..$n"
echo "$npass passed, $nfail failed$([ $nskip -eq 0 ] || echo ", $nskip skipped")"
[ $nfail -eq 0 ]
