#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Malformed DiskDescriptor.xml files get one clear error line each from
# prldisk info and check, never a crash (the sanitizer-built unit tests
# cover every rule; this is the command's side of it).
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd python3

"$PRLDISK" create good --size 64M >/dev/null
G=good/DiskDescriptor.xml
TOP='{5fbaabe3-6958-40ff-92a7-860e329aab41}'

# bad NAME WANT-SUBSTRING SED-SCRIPT: a copy of the good disk, edited
bad() {
	local name=$1 want=$2 rc
	mkdir -p "$name"
	cp good/root.hds "$name/"
	sed "$3" "$G" > "$name/DiskDescriptor.xml"
	for cmd in info check; do
		rc=0; "$PRLDISK" "$cmd" "$name" > "$name.$cmd.out" 2> "$name.$cmd.err" || rc=$?
		[ "$rc" -ne 0 ] || fail "$name: prldisk $cmd succeeded"
		[ "$rc" -lt 128 ] || fail "$name: prldisk $cmd died with status $rc"
		expect_eq "$(wc -l < "$name.$cmd.err")" 1 "$name: lines on stderr from $cmd"
		grep -qF -- "$want" "$name.$cmd.err" || fail "$name: '$(cat "$name.$cmd.err")' does not say '$want'"
	done
	note "$name: $(cat "$name.info.err")"
}

bad not-xml "line" 's/<Snapshots>/<Snapshots/'
bad doctype "DOCTYPE" '1a <!DOCTYPE x [ <!ENTITY a "aaaaaaaaaa"> <!ENTITY b "&a;&a;&a;&a;&a;&a;"> ]>'
bad xxe "DOCTYPE" '1a <!DOCTYPE x [ <!ENTITY e SYSTEM "file:///etc/passwd"> ]>'
bad root-element "Parallels_disk_image" 's/Parallels_disk_image>/Other_disk_image>/g'
bad no-root "root" "s/<ParentGUID>{0*-0*-0*-0*-0*}</<ParentGUID>$TOP</"
bad unknown-parent "ParentGUID" "s/<ParentGUID>{0*-0*-0*-0*-0*}</<ParentGUID>{11111111-2222-3333-4444-555555555555}</"
bad escape "--allow-external-paths" 's|<File>root.hds</File>|<File>../good/root.hds</File>|'
bad absolute "--allow-external-paths" 's|<File>root.hds</File>|<File>/etc/passwd</File>|'
bad huge "too large" 's|<Disk_size>131072</Disk_size>|<Disk_size>99999999999999999999999</Disk_size>|'
bad padding "Padding" 's|<Padding>0</Padding>|<Padding>1</Padding>|'
bad split "split" 's|</Storage>|</Storage><Storage><Start>0</Start><End>131072</End><Blocksize>2048</Blocksize></Storage>|'
bad bad-guid "GUID" "s/<GUID>$TOP<\/GUID>/<GUID>{nonsense}<\/GUID>/"
bad no-image "Image" 's|<Image>|<Imagex>|; s|</Image>|</Imagex>|'
bad empty "" 'd'

# A descriptor naming a file that is not there: check says which.
mkdir missing && cp "$G" missing/
rc=0; "$PRLDISK" check missing > missing.out 2> missing.err || rc=$?
expect_eq "$rc" 2 "check of a disk whose image is missing"
grep -qF "root.hds" missing.err || fail "the missing file is not named: $(cat missing.err)"
