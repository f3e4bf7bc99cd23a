#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# A Parallels Desktop style disk folder (issue 16): NAME.hdd/ holding
# DiskDescriptor.xml, DiskDescriptor.xml.Backup, an empty NAME.hdd, a
# NAME.hdd.drh and NAME.hdd.0.{GUID}.hds, with the descriptor elements
# Parallels Desktop writes and we do not use (sector sizes, Encryption
# with a Salt, a Miscellaneous block of counters).
#   a: every change keeps the Backup identical to the descriptor (it used
#      to be left behind, describing files that were gone), and keeps the
#      unknown elements byte for byte;
#   b: check of a missing or unreadable descriptor names the Backup and
#      the command that restores it;
#   c: a Backup that differs is reported, and rewritten by --repair;
#   d: a <File> naming the Backup is refused (a reserved name).
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img python3

D=Disk.hdd
"$SRC/tests/tools/pd-folder.sh" "$D"

# unknown FILE: the elements we do not know, as bytes
unknown() {
	python3 - "$1" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
for tag in ("PhysicalSectorSize", "LogicSectorSize", "Encryption", "Miscellaneous"):
    m = re.search(r"<%s>.*?</%s>" % (tag, tag), s, re.S)
    print(m.group(0) if m else "MISSING " + tag)
PY
}
unknown "$D/DiskDescriptor.xml" > unknown.before
# same WHEN: the Backup is the descriptor, and the unknown elements are kept
same() {
	cmp "$D/DiskDescriptor.xml" "$D/DiskDescriptor.xml.Backup" >&2 ||
		fail "a: after $1 DiskDescriptor.xml.Backup is not the descriptor"
	unknown "$D/DiskDescriptor.xml" > unknown.after
	diff unknown.before unknown.after >&2 ||
		fail "a: after $1 the elements Parallels Desktop wrote are changed"
}

"$PRLDISK" info "$D" > info.txt || fail "info of a Parallels Desktop folder failed"
cat info.txt >&2
# The sector sizes are the device's (activate passes them to the target).
grep -qx 'sector size:    512 logical, 4096 physical' info.txt ||
	fail "info does not show the sector sizes: $(grep -i sector info.txt)"
expect_eq "$("$PRLDISK" info --json "$D" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d.get("logical_sector_size"), d.get("physical_sector_size"))')" "512 4096" \
	"info --json sector sizes"
"$PRLDISK" check "$D" >&2 || fail "check of a Parallels Desktop folder failed"

note "a: changes keep the Backup and the unknown elements"
s1=$("$PRLDISK" snapshot --json "$D" | sed -n 's/.*"snapshot": *"\({[^}]*}\)".*/\1/p')
same snapshot
"$PRLDISK" resize --size 128M "$D" >/dev/null
same resize
"$PRLDISK" snapshot "$D" >/dev/null
same "a second snapshot"
"$PRLDISK" snapshot-delete "$D" "$s1" >/dev/null
same snapshot-delete
s2=$("$PRLDISK" info --json "$D" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print([i["guid"] for i in d["images"] if i["guid"] != d["top"]][0])')
"$PRLDISK" switch "$D" "$s2" >/dev/null
same switch
"$PRLDISK" check "$D" >&2 || fail "a: the disk does not check after the changes"

note "b: a missing or unreadable descriptor, a sound Backup"
for how in missing garbage; do
	cp -p "$D/DiskDescriptor.xml" saved.xml
	if [ $how = missing ]; then rm "$D/DiskDescriptor.xml"; else echo '<Parall' > "$D/DiskDescriptor.xml"; fi
	rc=0
	"$PRLDISK" check "$D" > b.out 2> b.err || rc=$?
	[ "$rc" -ne 0 ] || fail "b: check of a $how descriptor succeeded"
	cmd=$(sed -n "s/.*restore the descriptor from it with: //p" b.err)
	[ -n "$cmd" ] || fail "b: check of a $how descriptor does not say how to restore it: $(cat b.err)"
	note "b: $how: $(grep -F Backup b.err)"
	eval "$cmd"
	cmp saved.xml "$D/DiskDescriptor.xml" || fail "b: the restore command did not give back the descriptor"
	"$PRLDISK" check "$D" >&2 || fail "b: the restored disk does not check"
done

note "c: a Backup that differs"
echo '<!-- older -->' >> "$D/DiskDescriptor.xml.Backup"
rc=0
"$PRLDISK" check "$D" > c.out 2>&1 || rc=$?
expect_eq "$rc" 3 "c: check exit status with a differing Backup"
grep -qF "differs from the descriptor" c.out || fail "c: check does not say the Backup differs: $(cat c.out)"
"$PRLDISK" check --repair "$D" >&2 || fail "c: check --repair failed"
cmp "$D/DiskDescriptor.xml" "$D/DiskDescriptor.xml.Backup" || fail "c: --repair did not rewrite the Backup"
"$PRLDISK" check "$D" >&2 || fail "c: the disk does not check after --repair"

note "d: a <File> naming the Backup"
sed "s|<File>[^<]*</File>|<File>DiskDescriptor.xml.Backup</File>|" "$D/DiskDescriptor.xml" > d.xml
cp d.xml "$D/DiskDescriptor.xml"
rc=0
"$PRLDISK" info "$D" > d.out 2> d.err || rc=$?
[ "$rc" -ne 0 ] || fail "d: a <File> naming DiskDescriptor.xml.Backup was accepted"
grep -qF "reserved" d.err || fail "d: the refusal does not say why: $(cat d.err)"
note "all Parallels Desktop descriptor cases passed"
