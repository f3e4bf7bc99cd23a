#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# snapshot-delete, switch, resize and convert keep every remaining
# snapshot's content: each view, as QEMU reads it through --image-opts
# backing chains, is the same before and after (and the images pass
# qemu-img check and prldisk check).
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img qemu-io python3
chain=$SRC/tests/tools/chain.py

top_file() {
	python3 "$chain" opts "$1/DiskDescriptor.xml" | sed 's/^driver=[a-z]*,file.filename=\([^,]*\).*/\1/'
}
# views DISK TAG: save every GUID's view as DISK.TAG.<guid>.raw
views() {
	local g
	for g in $(python3 "$chain" guids "$1/DiskDescriptor.xml"); do
		python3 "$chain" flat "$1/DiskDescriptor.xml" "$1.$2.$g.raw" "$g"
	done
}
# same DISK BEFORE AFTER [SKIP-GUID]: every view in AFTER equals BEFORE's
same() {
	local g n=0
	for g in $(python3 "$chain" guids "$1/DiskDescriptor.xml"); do
		[ "$g" != "${4-}" ] || continue
		cmp "$1.$2.$g.raw" "$1.$3.$g.raw" || fail "$1: view of $g changed"
		n=$((n + 1))
	done
	[ $n -gt 0 ] || fail "$1: no views compared"
	for f in "$1"/*.hds*; do
		qemu-img check -q -f parallels "$f" || fail "qemu-img check $f"
	done
	rc=0; "$PRLDISK" check "$1" >&2 || rc=$?
	expect_eq "$rc" 0 "prldisk check $1"
}
# build DISK ARGS...: a chain of three snapshots with overlapping writes
build() {
	local d=$1 i
	shift
	"$PRLDISK" create "$d" "$@" >&2
	for i in 1 2 3; do
		qemu-io -f parallels -c "write -P $((i * 7)) $((i * 2))M 3M" \
			-c "write -P $((i * 9)) $((i * 5 + 300))k 100k" "$(top_file "$d")" >/dev/null
		"$PRLDISK" snapshot "$d" >&2
	done
	qemu-io -f parallels -c "write -P 99 1M 2M" "$(top_file "$d")" >/dev/null
}
snaps() { python3 "$chain" guids "$1/DiskDescriptor.xml" | tail -n +2; }
parent_of() {
	"$PRLDISK" info --json "$1" | python3 -c "import json,sys; print({i['guid']: i['parent'] for i in json.load(sys.stdin)['images']}['$2'])"
}

# snapshot-delete of a middle snapshot: its child takes its clusters.
build del --size 32M --cluster-size 64K
views del before
mid=$(snaps del | sed -n 2p)
p=$(parent_of del "$mid")
"$PRLDISK" snapshot-delete del "$mid" >&2
views del after
same del before after
"$PRLDISK" info del | grep -qF "$mid" && fail "deleted snapshot still listed"
[ "$(ls del/*.hds* | wc -l)" -eq 3 ] || fail "the deleted snapshot's file is still there"
note "snapshot-delete $mid (parent $p): views unchanged"
# ... and of the root: what the children read from it moves into them.
root=$(python3 "$chain" opts del/DiskDescriptor.xml | sed 's/.*file.filename=//')
rg=$(for g in $(snaps del); do
	if [ "$(parent_of del "$g")" = "{00000000-0000-0000-0000-000000000000}" ]; then echo "$g"; fi
done)
"$PRLDISK" snapshot-delete del "$rg" >&2
views del after2
same del before after2
[ ! -e "$root" ] || fail "the root's file is still there"
expect_fail "$PRLDISK" snapshot-delete del "$(python3 "$chain" top del/DiskDescriptor.xml)"

# switch: back to the oldest snapshot; the others keep their views.
build sw --size 32M
views sw before
old=$(snaps sw | tail -n 1)
oldtop=$(top_file sw)
"$PRLDISK" switch sw "$old" >&2
views sw after
same sw before after "$(python3 "$chain" top sw/DiskDescriptor.xml)"
cmp "sw.after.$(python3 "$chain" top sw/DiskDescriptor.xml).raw" "sw.before.$old.raw" ||
	fail "after switch the top does not read as snapshot $old"
[ ! -e "$oldtop" ] || fail "switch left the old top's file"

# resize: the top grows (its BAT into the data area: past 256 MiB, a BAT
# of 32 KiB clusters needs a second cluster); views keep their data.
build rs --size 32M --cluster-size 32K
views rs before
data_off=$(od -An -tu4 -j48 -N4 "$(top_file rs)" | tr -d ' ')
"$PRLDISK" resize rs --size 260M >&2
[ "$(od -An -tu4 -j48 -N4 "$(top_file rs)" | tr -d ' ')" -gt "$data_off" ] ||
	fail "the resize did not move the data area"
views rs after
for g in $(python3 "$chain" guids rs/DiskDescriptor.xml); do
	expect_eq "$(stat -c %s "rs.after.$g.raw")" $((260 << 20)) "size of view $g after resize"
	cmp -n $((32 << 20)) "rs.before.$g.raw" "rs.after.$g.raw" || fail "resize changed view $g"
	[ "$(tail -c $((228 << 20)) "rs.after.$g.raw" | tr -d '\0' | wc -c)" -eq 0 ] ||
		fail "the grown part of view $g is not zeros"
done
for f in rs/*.hds*; do qemu-img check -q -f parallels "$f" || fail "qemu-img check $f"; done
qemu-io -f parallels -c "write -P 5 250M 1M" -c "read -P 5 250M 1M" "$(top_file rs)" >/dev/null ||
	fail "QEMU cannot use the grown part"
expect_fail "$PRLDISK" resize rs --size 16M

# convert v2 -> v1 -> v2: every view the same after each.
build cv --size 32M --cluster-size 64K
views cv before
"$PRLDISK" convert cv --image-format v1 >&2
for f in cv/*.hds*; do expect_eq "$(head -c 16 "$f")" WithoutFreeSpace "magic of $f"; done
views cv v1
same cv before v1
"$PRLDISK" convert cv --image-format v2 >&2
for f in cv/*.hds*; do expect_eq "$(head -c 16 "$f")" WithouFreSpacExt "magic of $f"; done
views cv v2
same cv before v2
