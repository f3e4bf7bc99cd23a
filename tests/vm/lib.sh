# SPDX-License-Identifier: GPL-2.0
#
# Helpers for the in-guest tests tests/vm/t-*.sh (POSIX sh; bash is fine):
#	. "$SRC/tests/vm/lib.sh"
# The harness runs each test as root, in $T (a fresh, empty scratch dir; keep
# files and mount points there), with SRC (the repo), KVER, TMPDIR=/tmp and
# DM_DISABLE_UDEV=1 set.  /tmp is ext4 on a scratch disk: O_DIRECT works.
# Exit status, kselftest style: 0 pass, 4 skip (KSFT_SKIP), anything else fail.
#
#   note MSG...          print "# MSG"
#   fail MSG...          print "# FAIL: MSG", exit 1; also inside $(...): the
#                        test then fails at exit even if the caller went on
#   skip WHY...          print "# SKIP: WHY", exit 4
#   expect_fail CMD...   fail the test if CMD succeeds
#   expect_err TEXT CMD...   ... or if its stderr lacks TEXT (an errno's message)
#   expect_eq GOT WANT [WHAT]   fail unless GOT = WANT (strings)
#   require_cmd CMD...   skip unless every CMD is installed
#   loop_ro FILE / loop_rw FILE   attach FILE (direct I/O when it can), print the device
#   dm_create NAME TABLE [dmsetup options, e.g. --readonly]
#   dm_remove NAME       remove one of them now
#   dm_remove_all        remove every dm device made with dm_create, newest first
#   at_exit CMD          run CMD (a string, eval'd) at exit, newest first
#   ploop_cmd ARGS...    Debian's ploop, with the big environment it needs
#   dmesg_mark / dmesg_since_mark   kernel messages printed after the mark
#   nothing_left [WHAT]  fail if any dm or loop device exists
#   run_case NAME        run the function case_NAME in a subshell under set -e:
#                        a failure is noted and the next case still runs
#   cases_done           fail the test if any run_case failed
#
# At exit, whatever the reason, everything is undone: mounts under $T, then
# the at_exit commands, dm devices and loop devices in reverse order of
# creation (so a stack comes down top first).  A dm device that cannot be
# removed fails the test.  Do not set your own EXIT trap: use at_exit.
# Messages go to stderr, so helpers can be used inside $(...).

# State lives in files, not variables: helpers may run in $(...) subshells.
_lib_state=$(mktemp -d "${TMPDIR:-/tmp}/.vmlib.XXXXXX") || exit 1
: > "$_lib_state/undo"

note() { echo "# $*" >&2; }

fail() {
	if [ -n "${_lib_expecting-}" ]; then	# inside expect_fail
		echo "# (expected) $*" >&2
	else
		echo "# FAIL: $*" >&2
		echo "$*" >> "$_lib_state/failed"
	fi
	exit 1
}

skip() {
	echo "# SKIP: $*" >&2
	echo "$*" > "$_lib_state/skipped"
	exit 4
}

expect_fail() {
	if (_lib_expecting=1; "$@") >&2; then
		fail "succeeded but should have failed: $*"
	fi
	note "failed as expected: $*"
}

# expect_err TEXT CMD...: CMD fails and says TEXT (an errno's message) on stderr.
expect_err() {
	_e=$1
	shift
	if (_lib_expecting=1; "$@") 2> "$_lib_state/err" >&2; then
		fail "succeeded but should have failed: $*"
	fi
	grep -qF "$_e" "$_lib_state/err" ||
		fail "$*: failed, but not with '$_e': $(head -c 300 "$_lib_state/err")"
	note "failed as expected ($_e): $*"
}

expect_eq() {
	[ "$1" = "$2" ] || fail "${3:-value}: got '$1', want '$2'"
}

require_cmd() {
	for _c; do
		command -v "$_c" >/dev/null 2>&1 || skip "$_c is not installed"
	done
}

at_exit() { echo "cmd $*" >> "$_lib_state/undo"; }

_lib_loop() {
	# Direct I/O keeps the page cache out of the way, like prldisk does;
	# tmpfs (6.1) cannot do it, so fall back to buffered I/O.
	if _d=$(losetup -f --show --direct-io=on "$@" 2>/dev/null); then :
	else
		# A failed dio switch may still have attached a device.
		[ -z "$_d" ] || echo "loop $_d" >> "$_lib_state/undo"
		_d=$(losetup -f --show "$@") || fail "losetup $*"
	fi
	echo "loop $_d" >> "$_lib_state/undo"
	echo "$_d"
}
loop_ro() { _lib_loop -r "$1"; }
loop_rw() { _lib_loop "$1"; }

dm_create() {
	_n=$1 _t=$2
	shift 2
	dmsetup create "$_n" "$@" --table "$_t" >&2 ||
		fail "dmsetup create $_n $* --table '$_t'"
	echo "dm $_n" >> "$_lib_state/undo"
}

dm_remove() {
	dmsetup remove --retry "$1" >&2 || fail "dmsetup remove $1"
	grep -vxF "dm $1" "$_lib_state/undo" > "$_lib_state/undo.new"
	mv "$_lib_state/undo.new" "$_lib_state/undo"
}

dm_remove_all() { _lib_undo dm || fail "dm_remove_all"; }

ploop_cmd() {
	# ploop 1.15 crashes when the environment is only a few bytes long.
	env PAD="$(head -c 8192 /dev/zero | tr '\0' x)" ploop "$@"
}

nothing_left() {
	_d=$(dmsetup ls | grep -v '^No devices found' || true)
	_l=$(losetup -a)
	[ -z "$_d$_l" ] || fail "${1-}: left behind: $_d $_l"
}

run_case() {
	note "=== $1"
	set +e
	(set -e; "case_$1")
	_rc=$?
	set -e
	[ $_rc -eq 0 ] || { note "=== $1: FAILED"; echo "$1" >> "$_lib_state/cases_failed"; }
}

cases_done() {
	[ ! -s "$_lib_state/cases_failed" ] ||
		fail "cases failed: $(tr '\n' ' ' < "$_lib_state/cases_failed")"
}

dmesg_mark() {
	_m="vmlib-mark-$$-$(date +%s%N)"
	echo "$_m" > "$_lib_state/mark"
	echo "$_m" > /dev/kmsg
}

dmesg_since_mark() {
	dmesg -t | awk -v m="$(cat "$_lib_state/mark")" 'p; $0 == m { p = 1 }'
}

# _lib_undo [KIND]: undo the recorded steps (of one kind), newest first.
_lib_undo() {
	_urc=0
	tac "$_lib_state/undo" > "$_lib_state/todo"
	: > "$_lib_state/keep"
	while read -r _k _a <&3; do
		if [ -n "${1-}" ] && [ "$_k" != "$1" ]; then
			echo "$_k $_a" >> "$_lib_state/keep"
			continue
		fi
		case $_k in
		cmd) eval "$_a" </dev/null >&2 || note "cleanup: '$_a' failed" ;;
		dm) if dmsetup info "$_a" >/dev/null 2>&1 &&
			! dmsetup remove --retry "$_a" >&2; then
				echo "# FAIL: cleanup: cannot remove dm device $_a" >&2
				_urc=1
			fi ;;
		loop) if losetup "$_a" >/dev/null 2>&1; then
				losetup -d "$_a" || note "cleanup: cannot detach $_a"
			fi ;;
		esac
	done 3< "$_lib_state/todo"
	tac "$_lib_state/keep" > "$_lib_state/undo"
	return $_urc
}

_lib_exit() {
	_rc=$?
	trap - EXIT
	set +e
	# Unmount whatever is mounted in the scratch dir, deepest first.
	if [ -n "${T-}" ]; then
		awk -v t="$T/" 'index($2, t) == 1 { print $2 }' /proc/mounts | tac |
			while read -r _m; do umount "$_m" || umount -l "$_m"; done
	fi
	_lib_undo || { [ $_rc -ne 0 ] && [ $_rc -ne 4 ]; } || _rc=1
	# A fail inside $(...) only left its subshell: fail the test now.
	if [ -s "$_lib_state/failed" ] && { [ $_rc -eq 0 ] || [ $_rc -eq 4 ]; }; then
		echo "# FAIL (earlier, in a subshell): $(cat "$_lib_state/failed")" >&2
		_rc=1
	elif [ -e "$_lib_state/skipped" ] && [ $_rc -eq 0 ]; then
		_rc=4
	fi
	rm -rf "$_lib_state"
	exit $_rc
}
trap _lib_exit EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM	# the harness' timeout: still clean up

# Under bash with set -e, say which command ended the test.
if [ -n "${BASH_VERSION-}" ]; then
	# shellcheck disable=SC2154,SC3047 # bash only, see the test above
	trap '_lib_e=$?; case $- in *e*) echo "# FAIL: line $LINENO: $BASH_COMMAND (status $_lib_e)" >&2 ;; esac' ERR
fi
