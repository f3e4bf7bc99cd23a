#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Long operations killed midway (issue 15): nothing is lost, check tells the
# half-done operation from corruption and says what to run, and the rerun
# goes on from where it was.
#   merge:   snapshot-delete killed while the child takes the snapshot's
#            clusters (the N-th pwrite gets SIGKILL, via strace): check is
#            not "corrupt" but names the interrupted delete and the command;
#            the rerun copies only what was not committed; check --repair
#            keeps the clusters already copied; every view is unchanged.
#   convert: convert killed while it writes its new file: check names the
#            .convert.XXXXXX leftover, --repair removes it, the image is
#            intact (and still clean).
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img qemu-io python3 strace
chain=$SRC/tests/tools/chain.py

top_file() {
	python3 "$chain" opts "$1/DiskDescriptor.xml" | sed 's/^driver=[a-z]*,file.filename=\([^,]*\).*/\1/'
}
views() {
	local g
	for g in $(python3 "$chain" guids "$1/DiskDescriptor.xml"); do
		python3 "$chain" flat "$1/DiskDescriptor.xml" "$2.$g.raw" "$g"
	done
}
# same DISK TAG: every view of DISK is the one saved as base.<guid>.raw
same() {
	local g n=0
	for g in $(python3 "$chain" guids "$1/DiskDescriptor.xml"); do
		views_one "$1" "$g" "$2.$g.raw"
		qemu-img compare -q -f raw -F raw "base.$g.raw" "$2.$g.raw" ||
			fail "$2: view of $g changed"
		n=$((n + 1))
	done
	[ $n -gt 0 ] || fail "$2: no views compared"
}
views_one() { python3 "$chain" flat "$1/DiskDescriptor.xml" "$3" "$2"; }
allocated() { "$PRLDISK" check --json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["images"][0]["allocated_clusters"])'; }
# pwrites DISK GUID: run snapshot-delete under strace, print its pwrite64 count
pwrites() {
	strace -f -e trace=pwrite64 -o "$T/pw.trace" "$PRLDISK" snapshot-delete "$1" "$2" >&2 ||
		fail "snapshot-delete $1 $2"
	grep -c pwrite64 "$T/pw.trace"
}

# ---- merge -----------------------------------------------------------------
# root (24M written), mid (40M written), top (4M written); delete mid:
# the top takes mid's clusters, 64K each (one pwrite a cluster).
"$PRLDISK" create m --size 64M --cluster-size 64K >&2
qemu-io -f parallels -c "write -P 1 0 24M" "$(top_file m)" >/dev/null
"$PRLDISK" snapshot m >&2
qemu-io -f parallels -c "write -P 2 8M 40M" "$(top_file m)" >/dev/null
"$PRLDISK" snapshot m >&2
qemu-io -f parallels -c "write -P 3 20M 4M" "$(top_file m)" >/dev/null
top=$(python3 "$chain" top m/DiskDescriptor.xml)
mid=$("$PRLDISK" info --json m | python3 -c "import json,sys; print({i['guid']: i['parent'] for i in json.load(sys.stdin)['images']}['$top'])")
topf=$(top_file m)
views m base
top0=$(allocated "$topf")

# A whole run, on a copy, for the number of writes a full merge takes.
cp -a m full
full=$(pwrites full "$mid")
note "a whole snapshot-delete: $full pwrites"
[ "$full" -gt 500 ] || fail "a whole merge wrote only $full times"

# Killed at the 350th pwrite: about 60% copied.
rc=0
strace -f -o /dev/null -e inject=pwrite64:signal=KILL:when=350 \
	"$PRLDISK" snapshot-delete m "$mid" >&2 || rc=$?
expect_eq "$rc" 137 "snapshot-delete killed by SIGKILL"
cp -a m killed

note "check of a disk whose snapshot-delete was killed"
rc=0; "$PRLDISK" check m > check.out 2>&1 || rc=$?
cat check.out >&2
[ "$rc" != 2 ] || fail "merge: check says corrupt (exit 2) after a killed snapshot-delete"
grep -q "snapshot-delete.*$mid" check.out ||
	fail "merge: check does not name the interrupted snapshot-delete of $mid"
grep -q "prldisk snapshot-delete .*$mid" check.out ||
	fail "merge: check does not say which command finishes it"
"$PRLDISK" check --json m > check.json || true
python3 -c '
import json, sys
j = json.load(open("check.json"))
ops = j.get("interrupted", [])
assert any(o.get("operation") == "snapshot-delete" and o.get("guid") == sys.argv[1] for o in ops), ops
' "$mid" || fail "merge: check --json does not list the interrupted snapshot-delete"

note "the rerun resumes"
resumed=$(pwrites m "$mid")
note "the resumed snapshot-delete: $resumed pwrites (a whole one: $full)"
[ "$resumed" -lt $((full * 3 / 5)) ] ||
	fail "merge: the rerun wrote $resumed times, a whole merge $full: it did not resume"
same m resumed
rc=0; "$PRLDISK" check m >&2 || rc=$?
expect_eq "$rc" 0 "merge: prldisk check after the resumed delete"
qemu-img check -q -f parallels "$topf" || fail "merge: qemu-img check of the top"
[ -z "$(find m -name '*.delete.*' -o -name '*.convert.*')" ] || fail "merge: a leftover stays in m/"

note "check --repair of the killed state keeps what was copied"
mv killed k2
rc=0; "$PRLDISK" check --repair k2 >&2 || rc=$?
[ "$rc" != 2 ] || fail "merge: check --repair says corrupt"
after=$(allocated "$(top_file k2)")
note "top clusters: $top0 before, $after after check --repair"
[ "$after" -gt $((top0 + 200)) ] ||
	fail "merge: check --repair threw away the copied clusters ($top0 before the merge, $after after repair)"
same k2 repaired
resumed=$(pwrites k2 "$mid")
[ "$resumed" -lt $((full * 3 / 5)) ] ||
	fail "merge: the rerun after repair wrote $resumed times, a whole merge $full"
same k2 k2done
rc=0; "$PRLDISK" check k2 >&2 || rc=$?
expect_eq "$rc" 0 "merge: prldisk check after repair and rerun"

# ---- convert ---------------------------------------------------------------
note "convert killed midway"
"$PRLDISK" create cv --size 64M --cluster-size 64K >&2
qemu-io -f parallels -c "write -P 5 0 40M" cv/root.hds >/dev/null
cp cv/root.hds orig.hds
rc=0
strace -f -o /dev/null -e inject=pwrite64:signal=KILL:when=300 \
	"$PRLDISK" convert cv --image-format v1 >&2 || rc=$?
expect_eq "$rc" 137 "convert killed by SIGKILL"
left=$(find cv -name 'root.hds.convert.*')
[ -n "$left" ] || fail "convert: no leftover to look for (the kill came too late?)"
rc=0; "$PRLDISK" check cv > check.out 2>&1 || rc=$?
cat check.out >&2
[ "$rc" != 2 ] || fail "convert: check says corrupt (exit 2) after a killed convert"
grep -qF "$(basename "$left")" check.out || fail "convert: check does not name the leftover $left"
rc=0; "$PRLDISK" check --repair cv >&2 || rc=$?
expect_eq "$rc" 0 "convert: check --repair"
[ ! -e "$left" ] || fail "convert: check --repair left $left"
qemu-img compare -q -f parallels -F parallels orig.hds cv/root.hds || fail "convert: the image changed"
qemu-img check -q -f parallels cv/root.hds || fail "convert: qemu-img check"
"$PRLDISK" convert cv --image-format v1 >&2
qemu-img compare -q -f parallels -F parallels orig.hds cv/root.hds || fail "convert: the rerun changed the data"
expect_eq "$(head -c 16 cv/root.hds)" WithoutFreeSpace "convert: the rerun converted"

# A lone image: the leftover beside it is named too.
cp orig.hds lone.hds
rc=0
strace -f -o /dev/null -e inject=pwrite64:signal=KILL:when=300 \
	"$PRLDISK" convert lone.hds --image-format v1 >&2 || rc=$?
expect_eq "$rc" 137 "convert of a lone image killed"
left=$(find . -maxdepth 1 -name 'lone.hds.convert.*')
rc=0; "$PRLDISK" check lone.hds > check.out 2>&1 || rc=$?
cat check.out >&2
[ "$rc" != 2 ] || fail "convert: check of the lone image says corrupt"
grep -qF "$(basename "$left")" check.out || fail "convert: check of lone.hds does not name $left"
"$PRLDISK" check --repair lone.hds >&2 || fail "convert: check --repair lone.hds"
[ ! -e "$left" ] || fail "convert: check --repair lone.hds left $left"
qemu-img compare -q -f parallels -F parallels orig.hds lone.hds || fail "convert: lone.hds changed"
note "a snapshot-delete that fails (not killed) leaves no marker"
"$PRLDISK" create busy --size 64M >/dev/null
g=$("$PRLDISK" snapshot --json busy | sed -n 's/.*"snapshot": *"\({[^}]*}\)".*/\1/p')
top=$(find busy -name 'root.hds.*')
# another program (QEMU, Parallels Desktop) has the top open
python3 "$SRC/tests/tools/patch-image.py" "$top" in_use=0x746f6e59
rc=0
"$PRLDISK" snapshot-delete busy "$g" > busy.out 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "busy: snapshot-delete over an image in use succeeded"
[ -z "$(find busy -name '*.delete.*')" ] ||
	fail "busy: the failed snapshot-delete left its marker: $(find busy -name '*.delete.*')"
rc=0
"$PRLDISK" snapshot-delete busy "$g" > busy2.out 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "busy: a second snapshot-delete wrote into the image in use"

note "a layer named like a leftover is the disk's, not a leftover"
"$PRLDISK" create named --size 64M >/dev/null
"$PRLDISK" snapshot named >/dev/null
top=$(find named -name 'root.hds.*')
mv "$top" named/root.hds.convert.ABCDEF
sed -i "s|<File>$(basename "$top")</File>|<File>root.hds.convert.ABCDEF</File>|" named/DiskDescriptor.xml
"$PRLDISK" check named > named.out 2>&1 || fail "named: check: $(cat named.out)"
"$PRLDISK" check --repair named >&2 || fail "named: check --repair"
[ -e named/root.hds.convert.ABCDEF ] || fail "named: check --repair removed the disk's top"
note "all passed"
