#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Owned devices (issues 15 and 16): each disk's dm devices carry its
# identity, so that commands given a descriptor touch only that disk.
# - Virtuozzo layout, /vz/private/101/root.hdd and .../102/root.hdd
#   activated side by side without --name: distinct names; deactivate and
#   status of one leave the other untouched (listed, data read back);
# - deactivate of a disk activated under --name finds it by identity and
#   leaves another disk's device of the default name alone;
# - a device made by hand under a disk's default name is not removed by
#   deactivate XML, which says why;
# - resize and convert of a lower layer of an active disk are refused,
#   naming the device; the top's online resize still works;
# - a device made by an older prldisk (no identity in its UUID) is still
#   its disk's for deactivate XML, and not another disk's.
# vm-timeout: 300
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd dmsetup losetup blockdev cmp python3

P=$SRC/userspace/prldisk
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"

V=$T/vz/private
X1=$V/101/root.hdd/DiskDescriptor.xml
X2=$V/102/root.hdd/DiskDescriptor.xml
# Whatever a case leaves active comes down at exit (deactivate is idempotent).
at_exit "cd / && for x in $X1 $X2; do $P deactivate \$x >/dev/null 2>&1; done; for n in ct102 101-root.hdd 102-root.hdd root.hdd; do $P deactivate \$n >/dev/null 2>&1; done"

mkdir -p "$V/101" "$V/102"
"$P" create "$V/101/root.hdd" --size 64M >&2
"$P" create "$V/102/root.hdd" --size 64M >&2
head -c 2M /dev/urandom > p101
head -c 2M /dev/urandom > p102

# put NAME FILE / got NAME FILE: write FILE at the start of the device, read it back.
put() { dd if="$2" of="/dev/mapper/$1" bs=1M oflag=direct conv=fsync status=none; }
got() {
	dd if="/dev/mapper/$1" bs=1M count=2 iflag=direct status=none > got.raw ||
		fail "cannot read /dev/mapper/$1"
	cmp -s got.raw "$2" || fail "/dev/mapper/$1 does not read back $2"
}
listed() { dmsetup ls | awk '{ print $1 }' | grep -qxF "$1"; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
# Everything of ours is gone (the hand-made device of the last case aside).
down() {
	for x in "$X1" "$X2"; do (cd / && "$P" deactivate "$x" >/dev/null); done
}
# Each case starts with nothing active, whatever the one before left.
reset() {
	(cd / && for n in 101-root.hdd 102-root.hdd root.hdd ct102; do
		"$P" deactivate "$n"; done; for x in "$X1" "$X2"; do
		"$P" deactivate "$x"; done) > /dev/null 2>&1 || true
}

case_side_by_side() {
	reset
	d1=$("$P" activate "$V/101/root.hdd")
	d2=$("$P" activate "$V/102/root.hdd") ||
		fail "the second root.hdd was not activated beside the first"
	note "devices: $d1 $d2"
	[ "$d1" != "$d2" ] || fail "both disks got $d1"
	expect_eq "$d1" /dev/mapper/101-root.hdd "101's default name"
	expect_eq "$d2" /dev/mapper/102-root.hdd "102's default name"
	n1=${d1#/dev/mapper/} n2=${d2#/dev/mapper/}
	put "$n1" p101
	put "$n2" p102
	# status by descriptor: that disk's device, nothing else.
	s=$("$P" status "$V/102/root.hdd" --json) || fail "status by descriptor failed"
	expect_eq "$(echo "$s" | json 'd["name"]')" "$n2" "status of 102's descriptor"
	expect_eq "$(echo "$s" | json 'd["descriptor"]')" "$X2" "status's descriptor"
	(cd / && "$P" deactivate "$V/102/root.hdd") >&2
	! listed "$n2" || fail "$n2 is still there after deactivate of its descriptor"
	listed "$n1" || fail "$n1 went with the deactivate of 102"
	got "$n1" p101
	# And the other way round, 102 active again.
	d2=$("$P" activate "$X2")
	expect_eq "$d2" /dev/mapper/102-root.hdd "102's name again"
	got "$n2" p102
	(cd / && "$P" deactivate "$X1") >&2
	! listed "$n1" || fail "$n1 is still there after deactivate of its descriptor"
	listed "$n2" || fail "$n2 went with the deactivate of 101"
	got "$n2" p102
	down
}

# 102 under --name, 101 under the name that was everyone's default before.
case_deactivate_by_identity() {
	reset
	"$P" activate "$X1" --name root.hdd >/dev/null
	"$P" activate "$X2" --name ct102 >/dev/null
	put root.hdd p101
	put ct102 p102
	(cd / && "$P" deactivate "$X2") > deact.out
	note "deactivate 102: $(cat deact.out)"
	listed root.hdd || fail "deactivate of 102's descriptor removed 101's root.hdd"
	! listed ct102 || fail "deactivate of 102's descriptor left its device ct102"
	got root.hdd p101
	# status of an inactive disk says so and shows no other disk.
	if "$P" status "$X2" > st.out 2> st.err; then
		fail "status of inactive 102 succeeded: $(cat st.out)"
	fi
	grep -q "not active" st.err || fail "status of inactive 102: $(cat st.err)"
	down
}

# A hand-made parallels table under 101's default name, over another image.
case_handmade() {
	reset
	d1=$("$P" activate "$X1")
	n1=${d1#/dev/mapper/}
	(cd / && "$P" deactivate "$X1") >&2
	"$P" create other --size 64M >&2
	l=$(loop_ro "$T/other/root.hds")
	dm_create "$n1" "0 131072 parallels $l -" --readonly
	if (cd / && "$P" deactivate "$X1") > deact.out 2> deact.err; then
		fail "deactivate 101 succeeded over a device made by hand: $(cat deact.out deact.err)"
	fi
	note "refused: $(cat deact.err)"
	grep -q "not made by prldisk" deact.err ||
		fail "deactivate does not say why: $(cat deact.err)"
	listed "$n1" || fail "deactivate 101 removed the device $n1 made by hand"
	# With its default name taken, 101 gets another one, and back.
	d=$("$P" activate "$X1")
	note "101 beside the hand-made device: $d"
	[ "$d" != "$d1" ] || fail "101 got the hand-made name"
	(cd / && "$P" deactivate "$X1") >&2
	! listed "${d#/dev/mapper/}" || fail "$d left after deactivate"
	listed "$n1" || fail "deactivate 101 removed the device $n1 made by hand"
	dm_remove "$n1"
}

# A snapshot, so that root.hds is a read-only lower layer of the active disk.
case_lower_layer() {
	reset
	"$P" snapshot "$X1" >&2
	low=$V/101/root.hdd/root.hds
	d1=$("$P" activate "$X1")
	n1=${d1#/dev/mapper/}
	put "$n1" p101
	sum=$(md5sum < "$low")
	if "$P" resize "$low" --size 128M > rs.out 2> rs.err; then
		fail "resize of the lower layer $low of active $n1 succeeded"
	fi
	note "resize refused: $(cat rs.err)"
	grep -qF "$n1" rs.err || fail "resize refusal does not name $n1: $(cat rs.err)"
	if "$P" convert "$low" --image-format v1 > cv.out 2> cv.err; then
		fail "convert of the lower layer $low of active $n1 succeeded"
	fi
	note "convert refused: $(cat cv.err)"
	grep -qF "$n1" cv.err || fail "convert refusal does not name $n1: $(cat cv.err)"
	expect_eq "$(md5sum < "$low")" "$sum" "the lower layer after the refusals"
	# The top's online resize still works.
	"$P" resize "$X1" --size 128M >&2
	expect_eq "$(blockdev --getsize64 "$d1")" $((128 << 20)) "size after online resize"
	got "$n1" p101
	down
}

# A device as an older prldisk made it: UUID PRLDISK-<guid>-<name>, no
# identity, under the name every root.hdd had.  Remade here over the same
# loop device (a linear table holds it meanwhile).
case_legacy() {
	reset
	"$P" activate "$X1" --name root.hdd >/dev/null
	put root.hdd p101
	t=$(dmsetup table root.hdd)
	u=$(dmsetup info -c --noheadings -o uuid root.hdd)
	img=$(echo "$t" | awk '{ print $4 }')
	dm_create hold "0 8 linear $img 0" --readonly
	dmsetup remove root.hdd >&2
	dmsetup create root.hdd --uuid "PRLDISK-${u:8:36}-root.hdd" --table "$t" >&2
	dm_remove hold
	(cd / && "$P" deactivate "$X2") >&2
	listed root.hdd || fail "deactivate of 102 removed 101's device of an older prldisk"
	got root.hdd p101
	(cd / && "$P" deactivate "$X1") >&2
	! listed root.hdd || fail "deactivate of 101 left its device of an older prldisk"
}

run_case side_by_side
run_case deactivate_by_identity
run_case handmade
run_case lower_layer
run_case legacy
cases_done
