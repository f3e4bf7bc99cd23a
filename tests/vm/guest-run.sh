#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Inside the test VM, chrooted into the host's root (see run-vm.sh): load
# the modules, run each test in tests.list with a timeout, and report
# through files in the results share R, which the host follows:
#   progress       "ready <uptime>", "start <t>", "end <t> ok|skip|fail <secs> [why]", "done <rc>"
#   <t>.log        the test's stdout+stderr, plus the harness' remarks
#   <t>.dmesg      kernel messages printed while it ran
#   setup.log      anything module loading printed
# Then power off with the status on the isa-debug-exit port (16 + rc).
set -u
R=${1:-/tmp/results}
. "$R/guest.env"	# SRC KVER MODULE, written by run-vm.sh
export SRC KVER
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8
export DM_DISABLE_UDEV=1	# no udev here: libdevmapper makes /dev/mapper nodes itself
cd /

# Kernel complaints that fail the test that was running, even if it passed.
BAD='WARNING:|BUG:|Oops|general protection|Call Trace|KASAN|list_add corruption|list_del corruption'

progress() { echo "$*" >> "$R/progress"; }
kmsg() { echo "vm-harness: $*" > /dev/kmsg; }

{
	modprobe -a dm-mod loop dm-log-writes dm-flakey dm-delay
	if [ -z "$MODULE" ]; then
		echo "dm-parallels.ko was not built for $KVER: not loaded"
	elif ! insmod "$MODULE"; then
		echo "insmod $MODULE failed"
	fi
} > "$R/setup.log" 2>&1

# Remove what a test left behind (mounts in its scratch dir, dm and loop
# devices), so the next one starts clean; say so in the test's log.
leftovers() {
	local m d l
	m=$(awk '$2 ~ "^/tmp/t/" { print $2 }' /proc/mounts | tac)
	d=$(dmsetup info -c --noheadings -o name | grep -v '^No devices found')
	l=$(losetup -n -O NAME)
	[ -n "$m$d$l" ] || return 0
	echo "harness: left behind and removed now:" $m $d $l
	for x in $m; do umount "$x" || umount -l "$x"; done
	[ -z "$d" ] || dmsetup remove_all --force
	[ -z "$l" ] || losetup -D
}

progress "ready $(cut -d' ' -f1 /proc/uptime)"
rc_all=0
while read -r t; do
	f=$SRC/tests/vm/$t.sh
	# A script elsewhere in the repo (tests/bench/...): named by its base name.
	case $t in */*) f=$SRC/$t.sh t=${t##*/} ;; esac
	log=$R/$t.log
	secs=$(sed -n 's/^# vm-timeout: *\([0-9][0-9]*\).*/\1/p' "$f" | head -n 1)
	secs=${secs:-300}
	export T=/tmp/t/$t	# the test's scratch dir, and its cwd
	rm -rf "$T" && mkdir -p "$T"
	[ -n "$MODULE" ] || echo "harness: dm-parallels.ko is NOT loaded (module build failed)" > "$log"
	progress "start $t"
	kmsg "begin $t"
	t0=$(date +%s)
	(cd "$T" && exec timeout -k 10 "$secs" "$f") >> "$log" 2>&1 < /dev/null &
	pid=$!
	wait $pid
	rc=$?
	# timeout made its own process group: end what the test left running.
	! kill -KILL -- -$pid 2>/dev/null ||
		echo "harness: killed processes $t left running" >> "$log"
	dur=$(($(date +%s) - t0))
	kmsg "end $t"
	dmesg | awk -v b="vm-harness: begin $t" \
		'substr($0, length($0) - length(b) + 1) == b { p = 1 } p' > "$R/$t.dmesg"
	case $rc in
	0) v=ok why= ;;
	4) v=skip why= ;;
	124|137) v=fail why="timed out after ${secs}s" ;;
	*) v=fail why="exit status $rc" ;;
	esac
	if bad=$(grep -E "$BAD" "$R/$t.dmesg"); then
		printf 'harness: the kernel complained while %s ran:\n%s\n' "$t" "$bad" >> "$log"
		v=fail why="${why:+$why, }kernel warning in dmesg"
	fi
	leftovers >> "$log" 2>&1
	rm -rf "$T"	# free the scratch space
	[ $v != fail ] || rc_all=1
	progress "end $t $v $dur $why"
done < "$R/tests.list"

progress "done $rc_all"
sync
printf "\\$(printf '%03o' $((16 + rc_all)))" | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
sleep 10	# QEMU is gone by now; if not, init reports the failure
exit $rc_all
