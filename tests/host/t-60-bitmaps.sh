#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# prldisk bitmap list/show/diff/clear/export offline, on bitmaps written by
# an independent tool (tests/tools/add-bitmap.py), judged by another
# reader (tests/tools/bitmap.py) and by QEMU: the granules shown, diff's
# extents, an export QEMU made, clear in place (QEMU still opens it), an
# offline snapshot carrying the bitmap to the new top, an image closed by
# old software (not trustworthy), a damaged extension (one error line) and
# an unknown NECESSARY feature (clear refused, file untouched).
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd python3 qemu-img

BM="python3 $SRC/tests/tools/bitmap.py"
js() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

qemu-img create -q -f parallels -o cluster_size=65536 b.hds 64M
ID=$(python3 "$SRC/tests/tools/add-bitmap.py" b.hds 128 0 5000 5100 131071 | tr -d '{}')
"$PRLDISK" bitmap show --json b.hds > s.json
expect_eq "$(js 'd["id"], d["changed"], d["granules"], d["trusted"]' < s.json)" \
	"$ID 3 1024 True" "show"
expect_eq "$("$PRLDISK" bitmap diff b.hds | tr '\n' ' ')" \
	"0 65536 2555904 65536 67043328 65536 " "diff"
expect_eq "$("$PRLDISK" bitmap diff --json b.hds | js '[(e["offset"], e["length"]) for e in d]')" \
	"[(0, 65536), (2555904, 65536), (67043328, 65536)]" "diff --json"
"$PRLDISK" bitmap export b.hds --qcow2 b.qcow2 > /dev/null
expect_eq "$($BM qcow2 b.qcow2 | js 'd["bitmaps"][0]["dirty"]')" "[0, 39, 1023]" "export"
expect_fail "$PRLDISK" bitmap export b.hds
expect_eq "$("$PRLDISK" bitmap clear --json b.hds | js 'd["cleared"]')" b.hds "clear --json"
expect_eq "$($BM show b.hds | js 'd["closed_v21"], d["bitmaps"][0]["dirty"], d["bitmaps"][0]["id"]')" \
	"True [] $ID" "cleared in place"
qemu-img info -f parallels b.hds > /dev/null || fail "QEMU cannot open the cleared image"

# An offline snapshot carries the top's bitmap into the new top.
"$PRLDISK" create d --size 64M --cluster-size 64K > /dev/null
python3 "$SRC/tests/tools/add-bitmap.py" d/root.hds 128 0 300 > /dev/null
"$PRLDISK" snapshot d > /dev/null
"$PRLDISK" bitmap list --json d > l.json
expect_eq "$(js 'len(d), d[0]["id"] == d[1]["id"], [b["changed"] for b in d]' < l.json)" \
	"2 True [2, 2]" "bitmap list after a snapshot"
top=$(js '[b["image"] for b in d if "root.hds." in b["image"]][0]' < l.json)
expect_eq "$($BM show "$top" | js 'd["bitmaps"][0]["dirty"]')" "[0, 2]" "the new top's bitmap"
qemu-img info -f parallels "$top" > /dev/null || fail "QEMU cannot open the new top"
"$PRLDISK" check d > check.txt 2>&1 || fail "check after the snapshot: $(cat check.txt)"

# Closed by software that does not keep bitmaps (in_use 0): not trusted.
cp b.hds old.hds
printf '\0\0\0\0' | dd of=old.hds bs=1 seek=44 conv=notrunc status=none
"$PRLDISK" bitmap show old.hds | grep -q 'NOT trustworthy: the image was last closed by software' ||
	fail "in_use 0 not reported"
expect_eq "$("$PRLDISK" bitmap diff old.hds 2> /dev/null)" "0 67108864" "diff of an untrusted bitmap"

# A damaged extension: one line, exit 1, for each command.
cp b.hds bad.hds
ext=$(od -An -tu8 -j56 -N8 bad.hds | tr -d ' ')
printf 'X' | dd of=bad.hds bs=1 seek=$((ext * 512 + 200)) conv=notrunc status=none
for c in show diff clear; do
	rc=0
	"$PRLDISK" bitmap $c bad.hds > out.txt 2> err.txt || rc=$?
	expect_eq "$rc $(wc -l < err.txt)" "1 1" "bitmap $c of a damaged extension"
	grep -q 'MD5 mismatch' err.txt || fail "bitmap $c: $(cat err.txt)"
done

# An unknown NECESSARY feature next to nothing: no bitmap, clear refused.
qemu-img create -q -f parallels -o cluster_size=65536 n.hds 64M
$BM add-feature n.hds 0x1234 1 00
sha=$(sha256sum < n.hds)
expect_fail "$PRLDISK" bitmap clear n.hds
expect_eq "$(sha256sum < n.hds)" "$sha" "NECESSARY image untouched"
expect_eq "$("$PRLDISK" bitmap list n.hds)" "n.hds: no dirty bitmap" "list without a bitmap"
