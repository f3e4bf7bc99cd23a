#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Disks made by prldisk create and snapshot are what QEMU and ploop expect:
# every image passes qemu-img check and ploop check -f (on a non-sparse
# copy), ploop reads the descriptor (snapshot-list), and QEMU reads each
# snapshot's chain (--image-opts backing) as the writes made before it.
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd ploop qemu-img qemu-io python3
chain=$SRC/tests/tools/chain.py

# qcheck IMAGE: qemu-img check clean, and ploop's check of a full copy.
qcheck() {
	qemu-img check -q -f parallels "$1" || fail "qemu-img check $1"
	cp --sparse=never "$1" full.copy
	ploop_cmd check -f full.copy >&2 || fail "ploop check -f $1"
	rm -f full.copy
}

# disk NAME CREATE-ARGS...: create, three writes each followed by a
# snapshot, checking every view against a raw reference.
disk() {
	local name=$1 i g
	shift
	"$PRLDISK" create "$name" "$@" >&2 || fail "prldisk create $name $*"
	[ ! -e "$name/root.hds" ] || qcheck "$name/root.hds"	# as created
	truncate -s 48M "$name.ref"
	for i in 1 2 3; do
		top=$(python3 "$chain" opts "$name/DiskDescriptor.xml" |
			sed 's/^driver=[a-z]*,file.filename=\([^,]*\).*/\1/')
		# Each step overwrites part of the last one and adds new data.
		qemu-io -f parallels -c "write -P $((i * 16)) $((i * 3))M 5M" "$top" >/dev/null 2>&1 ||
			qemu-io -f raw -c "write -P $((i * 16)) $((i * 3))M 5M" "$top" >/dev/null
		qemu-io -f raw -c "write -P $((i * 16)) $((i * 3))M 5M" "$name.ref" >/dev/null
		g=$("$PRLDISK" snapshot --json "$name" | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot"])')
		qcheck "$(python3 "$chain" opts "$name/DiskDescriptor.xml" |
			sed 's/^driver=[a-z]*,file.filename=\([^,]*\).*/\1/')"	# the new top
		cp "$name.ref" "$name.ref.$g"
	done
	ploop_cmd snapshot-list "$name/DiskDescriptor.xml" >&2 || fail "ploop cannot read $name's descriptor"
	# QEMU, which wrote the data, leaves the Empty flag set (ploop check
	# objects): prldisk check --repair sets it right, then both agree.
	"$PRLDISK" check --repair "$name" >&2 || fail "prldisk check --repair $name"
	for f in "$name"/*.hds*; do
		qcheck "$f"
	done
	# Every snapshot reads as the writes made before it; the top as all.
	for g in $(python3 "$chain" guids "$name/DiskDescriptor.xml"); do
		python3 "$chain" flat "$name/DiskDescriptor.xml" view.raw "$g"
		ref=$name.ref.$g
		[ -e "$ref" ] || ref=$name.ref
		cmp view.raw "$ref" || fail "$name: view of $g differs"
	done
	rc=0; "$PRLDISK" check "$name" >&2 || rc=$?
	expect_eq "$rc" 0 "prldisk check $name"
	note "$name: ok"
}

disk v2-1m --size 48M
disk v2-64k --size 48M --cluster-size 64K
disk v1-1m --size 48M --image-format v1
disk plain --size 48M --plain

# The root image of a v1 disk carries the "WithoutFreeSpace" magic.
expect_eq "$(head -c 16 v1-1m/root.hds)" WithoutFreeSpace "v1 magic"
expect_eq "$(head -c 16 v2-1m/root.hds)" WithouFreSpacExt "v2 magic"

# Refusals: an existing disk, bad sizes, v1 beyond 2 TiB.
expect_fail "$PRLDISK" create v2-1m --size 1G
expect_fail "$PRLDISK" create bad --size 1000
expect_fail "$PRLDISK" create bad --size 1G --cluster-size 2G
expect_fail "$PRLDISK" create big --size 3T --image-format v1
[ ! -e big/DiskDescriptor.xml ] || fail "a refused create left a descriptor"

# The disk's lock: while another prldisk holds it, every change is refused
# with one line that says so, and the disk is left as it was.
cp v2-1m/DiskDescriptor.xml before.xml
exec 8> v2-1m/DiskDescriptor.xml.lck
flock 8
for cmd in "snapshot v2-1m" "check --repair v2-1m" "resize v2-1m --size 64M" \
	"convert v2-1m --image-format v1"; do
	rc=0; $PRLDISK $cmd 2> lock.err || rc=$?
	expect_eq "$rc" 1 "prldisk $cmd while locked"
	grep -q "is locked: another prldisk" lock.err || fail "prldisk $cmd: $(cat lock.err)"
done
exec 8>&-
cmp before.xml v2-1m/DiskDescriptor.xml || fail "a refused change changed the descriptor"
"$PRLDISK" snapshot v2-1m >/dev/null || fail "snapshot after the lock went away"
note "lock: changes refused while held"
