#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# prldisk check and --repair from the command line: each corruption gives
# the exit code it should (0 clean, 2 corrupt, 3 leaks only), names the
# problem (also in --json), and --repair leaves an image that qemu-img check
# accepts and prldisk check finds clean, with a sound cluster unchanged.
# (The full catalogue, 30 cases, is tests/unit/test_check.c.)
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img qemu-io python3
patch=$SRC/tests/tools/patch-image.py

# 64k clusters, 8 MiB; clusters 0..7 written with 0x5a (entries 1..8).
fresh() {
	rm -f "$1"
	qemu-img create -q -f parallels -o cluster_size=64k "$1" 8M
	qemu-io -f parallels -c "write -P 0x5a 0 512k" "$1" >/dev/null
}
entry() { od -An -tu4 -j$((64 + 4 * $2)) -N4 "$1" | tr -d ' '; }
kinds() { # the problem kinds --json reports
	python3 -c 'import json,sys; print(" ".join(sorted({p["kind"] for i in json.load(open(sys.argv[1]))["images"] for p in i["problems"]})))' "$1"
}

# one NAME WANT-RC WANT-KINDS AFTER-RC PATCH...  (AFTER-RC: after --repair,
# 3 where a dropped entry's old cluster is kept as a leak: it may be the
# real data, so only a second repair of a sound image compacts it)
one() {
	local name=$1 want=$2 wkinds=$3 after=$4 rc
	shift 4
	fresh "$name.hds"
	python3 "$patch" "$name.hds" "$@"
	rc=0; "$PRLDISK" check "$name.hds" > "$name.out" 2>&1 || rc=$?
	cat "$name.out" >&2
	expect_eq "$rc" "$want" "$name: check exit"
	rc=0; "$PRLDISK" check --json "$name.hds" > "$name.json" || rc=$?
	expect_eq "$rc" "$want" "$name: check --json exit"
	expect_eq "$(kinds "$name.json")" "$wkinds" "$name: kinds"
	rc=0; "$PRLDISK" check --repair "$name.hds" >&2 || rc=$?
	expect_eq "$rc" "$after" "$name: exit after --repair"
	qemu-img check -q -f parallels "$name.hds" || fail "$name: qemu-img check after repair"
	qemu-io -f parallels -c "read -P 0x5a 448k 64k" "$name.hds" >/dev/null ||
		fail "$name: repair changed cluster 7"
	rc=0; "$PRLDISK" check --repair "$name.hds" >&2 || rc=$?
	expect_eq "$rc" 0 "$name: exit after a second --repair"
	rc=0; "$PRLDISK" check --json "$name.hds" > "$name.after.json" || rc=$?
	expect_eq "$rc" 0 "$name: check after repair"
	expect_eq "$(kinds "$name.after.json")" "" "$name: problems after repair"
	qemu-io -f parallels -c "read -P 0x5a 448k 64k" "$name.hds" >/dev/null ||
		fail "$name: the second repair changed cluster 7"
	note "$name: ok"
}

fresh clean.hds
"$PRLDISK" check clean.hds >&2 || fail "a fresh QEMU image does not check clean"

one in-use 2 in_use 0 in_use=0x746f6e59
one outside 2 "bat_outside orphan" 3 'bat[3]=1000'
one duplicate 2 "bat_duplicate orphan" 3 "bat[3]=$(entry clean.hds 2)"
one data-off 2 data_off 0 data_off=7
one orphan 3 orphan 0 'bat[5]=0'
one tail 3 tail 0 truncate=$(($(stat -c %s clean.hds) + 3 * 65536))
one empty-flag 0 empty_flag 0 flags=1
one several 2 "bat_outside in_use orphan tail" 3 in_use=0x746f6e59 'bat[4]=5000' \
	truncate=$(($(stat -c %s clean.hds) + 65536))

# A duplicate's repair keeps what both entries read: the whole view.
fresh dupview.hds
qemu-io -f parallels -c "write -P 0x33 128k 64k" dupview.hds >/dev/null
python3 "$patch" dupview.hds "bat[6]=$(entry dupview.hds 2)"
qemu-img convert -f parallels -O raw dupview.hds before.raw
rc=0; "$PRLDISK" check --repair dupview.hds >&2 || rc=$?
expect_eq "$rc" 3 "repair of a duplicate (the old cluster of entry 6 kept)"
qemu-img convert -f parallels -O raw dupview.hds after.raw
cmp before.raw after.raw || fail "repairing a duplicate changed what the disk reads"
[ "$(entry dupview.hds 2)" != "$(entry dupview.hds 6)" ] || fail "still shared after repair"

# Not an image at all: one error line, exit 1.
head -c 4096 /dev/urandom > noise.hds
rc=0; "$PRLDISK" check noise.hds 2> noise.err || rc=$?
expect_eq "$rc" 2 "check of random bytes"
rc=0; "$PRLDISK" check missing.hds 2> missing.err || rc=$?
expect_eq "$rc" 1 "check of a missing file"
expect_eq "$(wc -l < missing.err)" 1 "lines of the missing-file error"

# A format extension with a dirty bitmap, written by an independent tool
# (and accepted by QEMU, which verifies its MD5): checks clean, info shows
# the bitmap; a broken MD5 is corrupt and repair drops the extension.
fresh ext.hds
id=$(python3 "$SRC/tests/tools/add-bitmap.py" ext.hds 128 0 5000)
qemu-img info -f parallels ext.hds >/dev/null || fail "QEMU refuses the extension"
"$PRLDISK" check ext.hds >&2 || fail "an image with a valid extension does not check clean"
"$PRLDISK" info ext.hds | tee ext.info >&2
grep -qF "MD5 valid" ext.info || fail "info does not say the extension is valid"
grep -qF "bitmap ${id//[\{\}]/}: granularity 64 KiB" ext.info || fail "info does not show the bitmap"
"$PRLDISK" info --json ext.hds | python3 -c '
import json, sys
f = json.load(sys.stdin)["format_extension"]["features"]
assert len(f) == 1 and f[0]["type"] == "dirty bitmap" and f[0]["granularity"] == 65536, f' ||
	fail "info --json of the extension"
ext_sector=$(od -An -tu8 -j56 -N8 ext.hds | tr -d ' ')
printf 'X' | dd of=ext.hds bs=1 seek=$((ext_sector * 512 + 100)) conv=notrunc status=none
rc=0; "$PRLDISK" check --json ext.hds > ext.json || rc=$?
expect_eq "$rc" 2 "check of a damaged extension"
expect_eq "$(kinds ext.json)" "extension tail" "kinds of a damaged extension"
rc=0; "$PRLDISK" check --repair ext.hds >&2 || rc=$?
expect_eq "$rc" 0 "after repairing a damaged extension"
expect_eq "$(od -An -tu8 -j56 -N8 ext.hds | tr -d ' ')" 0 "ext_off after repair"
qemu-img check -q -f parallels ext.hds || fail "qemu-img check after dropping the extension"
