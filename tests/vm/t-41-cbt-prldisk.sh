#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Changed block tracking through prldisk: activate --cbt, scripted writes,
# deactivate; prldisk bitmap show lists exactly the granules written, and
# bitmap export --qcow2 gives QEMU's reading of the same granules.  The
# bitmap goes on across an online snapshot (the new top carries it); bitmap
# clear (offline) and the cbt clear message leave only later writes; a
# crash copy (in_use open) is reported as not trustworthy, diff then gives
# the whole disk and export refuses; an online resize of a tracking disk is
# refused, and after cbt stop the disk resizes offline.
# vm-timeout: 300
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img python3 dmsetup losetup

P=$SRC/userspace/prldisk
BM="python3 $SRC/tests/tools/bitmap.py"
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"
at_exit "cd / && $P deactivate disk >/dev/null 2>&1"
js() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
deact() { (cd / && $P deactivate "$@") > /dev/null; }
wr() { dd if=/dev/urandom of=/dev/mapper/disk bs=512 seek=$(($1 / 512)) \
	count=$(($2 / 512)) oflag=direct conv=fsync status=none; }
granules() { $BM granules 65536 "$@"; }
# The granules prldisk bitmap show --json reports (from its byte ranges).
shown() {
	$P bitmap show --json "$1" | js '[g for r in d["ranges"] for g in range(r["offset"] // 65536, (r["offset"] + r["length"] - 1) // 65536 + 1)]'
}
t0=$(date +%s)

$P create disk --size 64M --cluster-size 64K > /dev/null
X=$T/disk/DiskDescriptor.xml
$P activate "$X" --cbt > /dev/null
expect_eq "$($P status disk --json | js 'd["layers"][0]["cbt"]')" 0/1024 "status of a new bitmap"
W1="0:4096 70144:512 1048576:131072 33554432:65536 67104768:4096"
for w in $W1; do wr ${w%:*} ${w#*:}; done
deact disk
want=$(granules $W1)
expect_eq "$(shown "$X")" "$want" "granules after deactivate"
$P bitmap show --json "$X" > s.json
expect_eq "$(js 'd["trusted"], d["changed"], d["granularity"]' < s.json)" "True 6 65536" "bitmap summary"
ID=$(js 'd["id"]' < s.json)
$P bitmap export "$X" --qcow2 out.qcow2 > /dev/null
expect_eq "$($BM qcow2 out.qcow2 | js 'd["bitmaps"][0]["name"], d["bitmaps"][0]["dirty"]')" \
	"$ID $want" "QEMU's export"
expect_fail $P bitmap export "$X" --qcow2 out.qcow2	# never overwritten
$P check "$X" > check.txt 2>&1 || fail "prldisk check: $(cat check.txt)"
note "tracking ok ($(($(date +%s) - t0)) s)"

# ---- across an online snapshot -------------------------------------------
$P activate "$X" > /dev/null		# the bitmap goes on without --cbt
wr 16777216 4096
$P snapshot "$X" > /dev/null
wr 20971520 512
deact disk
want=$(granules $W1 16777216:4096 20971520:512)
expect_eq "$(shown "$X")" "$want" "granules after the snapshot"
expect_eq "$($P bitmap list --json "$X" | js '[b["id"] for b in d]')" "['$ID', '$ID']" \
	"both images hold the bitmap"
note "snapshot ok"

# ---- clear, offline and by message ---------------------------------------
$P bitmap clear "$X" > /dev/null
expect_eq "$(shown "$X")" "[]" "after bitmap clear"
$P activate "$X" > /dev/null
expect_fail $P bitmap clear "$X"	# the disk is active
wr 8388608 4096
dmsetup message disk 0 cbt clear
wr 12582912 4096
deact disk
expect_eq "$(shown "$X")" "$(granules 12582912:4096)" "after the cbt clear message"

# ---- a crash copy ------------------------------------------------------------
$P activate "$X" > /dev/null
wr 0 4096
TOP=$($P status disk --json | js 'd["layers"][0]["image_file"]')
cp --sparse=always "$TOP" crash.hds
deact disk
$P bitmap show crash.hds > show.txt
grep -q 'NOT trustworthy' show.txt || fail "crash copy not reported: $(cat show.txt)"
expect_eq "$($P bitmap diff crash.hds 2> diff.err)" "0 67108864" "diff of an untrusted bitmap"
grep -q 'not trustworthy' diff.err || fail "diff did not warn: $(cat diff.err)"
expect_fail $P bitmap export crash.hds --qcow2 crash.qcow2
expect_eq "$(shown "$X")" "$(granules 12582912:4096 0:4096)" "the real top after the crash copy"

# An image on a block device that a table holds: refused (its holders,
# and O_EXCL against a race), left as it was.
cp --sparse=always "$TOP" held.hds
LH=$(loop_rw held.hds)
dm_create held "0 $(blockdev --getsz "$LH") linear $LH 0"
sha=$(sha256sum < "$LH")
expect_fail $P bitmap clear "$LH"
expect_eq "$(sha256sum < "$LH")" "$sha" "a held image untouched"
dm_remove held
$P bitmap clear "$LH" > /dev/null || fail "bitmap clear of a free block device"
expect_eq "$(shown "$LH")" "[]" "block device cleared"

# ---- changes that would leave the bitmap stale -----------------------------
$P activate "$X" > /dev/null
if $P resize "$X" --size 128M > out.txt 2> err.txt; then
	fail "online resize of a tracking disk succeeded"
fi
grep -q 'dirty bitmap' err.txt || fail "resize refusal: $(cat err.txt)"
wr 4096 4096			# the device goes on
dmsetup message disk 0 cbt stop
deact disk
$P resize "$X" --size 128M || fail "offline resize after cbt stop"
expect_eq "$($P bitmap list "$X" | grep -c 'no dirty bitmap')" 1 "the top without a bitmap"
note "ok ($(($(date +%s) - t0)) s)"
