#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boot-time activation without systemd in the VM: the Exec lines of
# userspace/system/prldisk.service, run in their order (ExecStartPre,
# ExecStart, ExecStop) with the built prldisk and --tab pointing at a test
# prldisktab.  After start the auto disks are active with their options
# (cbt, ro) and a noauto one is not; a second start changes nothing; after
# stop no device or loop is left, each top is closed (in_use clear), cut to
# its image end, with the data written and its dirty bitmap.  Bad lines get
# one error naming file:line.  The udev rules are read by udevadm (no
# udevd runs here to make the link; t-51 does).  tests/host/t-81 boots
# systemd in a VM and runs the installed unit itself.
# vm-timeout: 240
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd python3 dmsetup losetup

P=$SRC/userspace/prldisk
UNIT=$SRC/userspace/system/prldisk.service
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"
at_exit "cd / && for n in d1 d2 d3; do $P deactivate \$n >/dev/null 2>&1; done"
js() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# unit KEY: run the unit's KEY= lines, as systemd would (a leading "-"
# ignores failure), with our prldisk and our table.
unit() {
	grep "^$1=" "$UNIT" | cut -d= -f2- | while IFS= read -r cmd; do
		ign=
		case $cmd in -*) ign=1 cmd=${cmd#-} ;; esac
		case $cmd in
		/usr/local/sbin/prldisk\ *) cmd="$P ${cmd#/usr/local/sbin/prldisk } --tab $T/prldisktab" ;;
		esac
		note "$1: $cmd"
		# shellcheck disable=SC2086
		(cd / && $cmd) || [ -n "$ign" ] || fail "$1 failed: $cmd"
	done
}

$P create d1 --size 64M --cluster-size 64K > /dev/null
$P create d2 --size 32M > /dev/null
$P snapshot d2 > /dev/null
$P create d3 --size 16M > /dev/null
cat > prldisktab <<EOF
# name	descriptor	options
d1	$T/d1	cbt

d2	$T/d2/DiskDescriptor.xml	ro   # a comment
d3	$T/d3	noauto
EOF

unit ExecStartPre
unit ExecStart
$P tab list --json --tab prldisktab > list.json
expect_eq "$(js '[(e["name"], e["active"]) for e in d]' < list.json)" \
	"[('d1', True), ('d2', True), ('d3', False)]" "after start"
expect_eq "$($P status d1 --json | js 'd["layers"][0]["cbt"], d["read_only"]')" "0/1024 False" "d1"
expect_eq "$($P status d2 --json | js 'd["read_only"], len(d["layers"])')" "True 2" "d2"
head -c 1M /dev/urandom > data
dd if=data of=/dev/mapper/d1 bs=64k seek=16 oflag=direct conv=fsync status=none
unit ExecStart				# again: nothing to do
nothing=$(dmsetup ls | wc -l)
expect_eq "$nothing" 3 "devices after a second start (d1, d2 and its layer)"

# udev: no udevd runs here and DM_DISABLE_UDEV marks every event "no disk
# rules", so only this much is checked: udevadm reads the rules without a
# complaint, and the device carries the DM_UUID they key on.  (t-51 runs
# udevd and sees the link.)
if command -v udevadm > /dev/null; then
	mkdir -p /run/udev/rules.d
	cp "$SRC/userspace/system/60-prldisk.rules" /run/udev/rules.d/
	dm=dm-$(dmsetup info -c --noheadings -o minor d1 | tr -d " ")
	udevadm test --action=add "/sys/class/block/$dm" > udev.out 2>&1 || true
	grep -q 'Reading rules file: /run/udev/rules.d/60-prldisk.rules' udev.out ||
		fail "udevadm did not read the rules"
	if grep -i '60-prldisk.rules.*\(invalid\|error\|unknown\)' udev.out; then
		fail "udevadm complains about the rules"
	fi
	expect_eq "$(dmsetup info -c --noheadings -o uuid d1 | cut -c1-8)" PRLDISK- "d1's DM_UUID"
fi

unit ExecStop
nothing_left "after stop"
TOP1=$T/d1/root.hds
expect_eq "$($P info --json "$TOP1" | js 'd["in_use"], d["image_end"] == d["file_size"]')" \
	"False True" "d1 closed and cut"
$P activate d1 --read-only > /dev/null
cmp -n 1048576 data <(dd if=/dev/mapper/d1 bs=64k skip=16 count=16 status=none) ||
	fail "d1 lost its data"
(cd / && $P deactivate d1) > /dev/null
expect_eq "$($P bitmap show --json d1 | js 'd["changed"], d["trusted"]')" "16 True" "d1's bitmap"

# A named noauto disk is activated; others are left alone.
(cd / && $P tab activate d3 --tab "$T/prldisktab") > /dev/null
expect_eq "$(dmsetup ls | awk '{ print $1 }' | tr '\n' ' ')" "d3 " "tab activate d3"
(cd / && $P tab deactivate --tab "$T/prldisktab") > /dev/null
expect_eq "$(dmsetup ls | grep -c d3 || true)" 1 "noauto d3 is not taken down by a plain stop"
(cd / && $P tab deactivate d3 --tab "$T/prldisktab") > /dev/null
nothing_left "at the end"

# Bad lines: one error naming the line, nothing activated.
bad() {
	printf '%s\n' "$1" > bad.tab
	rc=0
	$P tab activate --tab bad.tab > out.txt 2> err.txt || rc=$?
	expect_eq "$rc $(wc -l < err.txt)" "1 1" "bad line '$1'"
	grep -q "bad.tab:1: $2" err.txt || fail "bad line '$1': $(cat err.txt)"
	nothing_left "bad line"
}
bad "x $T/d1 bogus" "unknown option 'bogus'"
bad "x d1" "'d1': the descriptor path must be absolute"
bad "a/b $T/d1" "'a/b' is not a valid device name"
bad "lonely" "want NAME DESCRIPTOR"
expect_fail $P tab activate nosuch --tab prldisktab
nothing_left "at the very end"
