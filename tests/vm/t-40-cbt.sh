#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Changed block tracking in the target (dmsetup level), judged by an
# independent reader of the extension (tests/tools/bitmap.py) and by QEMU:
# - cbt_granularity: scripted writes, discards and write-zeroes; the status
#   counts their granules; after removal the image holds a bitmap closed as
#   v2.1 with exactly those granules, qemu-img info opens it (MD5 checked),
#   qemu-img bitmap --merge exports the same granules to qcow2, prldisk
#   check is clean;
# - reloaded without options the bitmap goes on (same id); cbt clear; a
#   crash copy (in_use open) loads with every bit set; the commit message
#   stores the bitmap of the open image; cbt stop drops it,
#   cbt start makes a new one with a new id;
# - unknown features: TRANSIT kept byte for byte, plain dropped, NECESSARY
#   refused read-write (read-only still served); a damaged extension is
#   dropped; cbt on a read-only table is refused.
# vm-timeout: 240
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img python3 dmsetup losetup blkdiscard

BM="python3 $SRC/tests/tools/bitmap.py"
P=$SRC/userspace/prldisk
SZ=131072			# 64 MiB
G=128				# 64 KiB granules
js() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
cbt_field() { dmsetup status "$1" | awk '{ print $8 }'; }
# wr DEV OFFSET LEN (bytes, 512-aligned): random data, direct, synced
wr() { dd if=/dev/urandom of="$1" bs=512 seek=$(($2 / 512)) count=$(($3 / 512)) \
	oflag=direct conv=fsync status=none; }
# granules OFFSET:LEN...: the granules those byte ranges touch, sorted
granules() { $BM granules 65536 "$@"; }
# rm_cut NAME FILE: remove after a suspend (which stores the bitmap), and
# copy FILE to FILE.cut cut at the image end the status then gave, as
# prldisk deactivate cuts a top (FILE stays extended for the next table).
rm_cut() {
	dmsetup suspend "$1"
	_end=$(dmsetup status "$1" | awk '{ print $6 }')
	dm_remove "$1"
	cp --sparse=always "$2" "$2.cut"
	truncate -s $((_end * 512)) "$2.cut"
}
# new_img FILE [MAGIC FLAGS HEXDATA]: 64 MiB, 64 KiB clusters, room to grow;
# with a format extension holding that one feature.
new_img() {
	qemu-img create -q -f parallels -o cluster_size=65536 "$1" 64M
	[ $# -eq 1 ] || $BM add-feature "$@"
	truncate -s 80M "$1"
}
t0=$(date +%s)

# ---- tracking from the table line ----------------------------------------
new_img c.hds
L=$(loop_rw c.hds)
dm_create c "0 $SZ parallels $L - 1 cbt_granularity:$G"
expect_eq "$(cbt_field c)" 0/1024 "cbt field of a new bitmap"
expect_eq "$(dmsetup table c | cut -d' ' -f5-)" "- 1 cbt_granularity:$G" "table round trip"
W="0:4096 70144:512 1048576:65536 2097152:200192 67104768:4096"
for w in $W; do wr /dev/mapper/c ${w%:*} ${w#*:}; done
# A discard of clusters the image does not own changes nothing: no mark.
blkdiscard -o 4194304 -l 131072 /dev/mapper/c
blkdiscard -z -o 8388608 -l 65536 /dev/mapper/c
want=$(granules $W 8388608:65536)
n=$(python3 -c "print(len($want))")
expect_eq "$(cbt_field c)" "$n/1024" "dirty granules in the status"
rm_cut c c.hds
$BM show c.hds > s1.json
expect_eq "$(js 'd["ext"], d["closed_v21"], len(d["bitmaps"]), d["bitmaps"][0]["granularity"]' < s1.json)" \
	"ok True 1 $G" "extension after a clean teardown"
expect_eq "$(js 'd["bitmaps"][0]["dirty"]' < s1.json)" "$want" "granules on disk"
ID=$(js 'd["bitmaps"][0]["id"]' < s1.json)
qemu-img info -f parallels c.hds > info.txt 2>&1 || fail "qemu-img info: $(cat info.txt)"
qemu-img create -q -f qcow2 x.qcow2 64M
qemu-img bitmap --add -g 64k x.qcow2 "$ID"
qemu-img bitmap --merge "$ID" -b c.hds -F parallels x.qcow2 "$ID" ||
	fail "QEMU cannot export the bitmap"
expect_eq "$($BM qcow2 x.qcow2 | js 'd["bitmaps"][0]["dirty"]')" "$want" "granules as QEMU read them"
$P check c.hds.cut > check.txt 2>&1 || fail "prldisk check: $(cat check.txt)"
note "tracking ok ($(($(date +%s) - t0)) s)"

# ---- reload, clear, crash copy -------------------------------------------
dm_create c "0 $SZ parallels $L -"
expect_eq "$(cbt_field c)" "$n/1024" "bitmap loaded again"
wr /dev/mapper/c 16777216 4096
expect_eq "$(cbt_field c)" "$((n + 1))/1024" "one more granule"
dmsetup message c 0 cbt clear
expect_eq "$(cbt_field c)" 0/1024 "after cbt clear"
wr /dev/mapper/c 33554432 512
cp --sparse=always c.hds crash.hds	# in_use is open: a crash image
# The commit message stores the bitmap too (still open: not trusted).
dmsetup message c 0 commit
cp --sparse=always c.hds open.hds
expect_eq "$($BM show open.hds | js 'd["closed_v21"], d["bitmaps"][0]["dirty"]')" \
	"False [512]" "bitmap stored by the commit message"
wr /dev/mapper/c 33554432 512
dm_remove c
expect_eq "$($BM show c.hds | js 'd["bitmaps"][0]["dirty"], d["bitmaps"][0]["id"]')" \
	"[512] $ID" "after clear and one write"
expect_eq "$($BM show crash.hds | js 'd["closed_v21"]')" False "crash copy is open"
L2=$(loop_rw crash.hds)
dm_create k "0 $SZ parallels $L2 - 1 ignore_in_use"
expect_eq "$(cbt_field k)" 1024/1024 "crashed bitmap: every granule dirty"
dm_remove k
note "reload, clear, crash ok"

# ---- stop and start ------------------------------------------------------
dm_create c "0 $SZ parallels $L -"
dmsetup message c 0 cbt stop
expect_eq "$(cbt_field c)" - "after cbt stop"
expect_fail dmsetup message c 0 cbt clear
wr /dev/mapper/c 0 4096
dm_remove c
expect_eq "$($BM show c.hds | js 'd["ext"], len(d["bitmaps"])')" "none 0" "stopped bitmap dropped"
dm_create c "0 $SZ parallels $L -"
expect_eq "$(cbt_field c)" - "no bitmap"
dmsetup message c 0 cbt start 256
expect_fail dmsetup message c 0 cbt start 256
expect_fail dmsetup message c 0 cbt start 100
expect_eq "$(cbt_field c)" 0/512 "started bitmap"
wr /dev/mapper/c 131072 512
rm_cut c c.hds
$BM show c.hds > s2.json
expect_eq "$(js 'd["bitmaps"][0]["granularity"], d["bitmaps"][0]["dirty"], d["bitmaps"][0]["id"] != "'"$ID"'"' < s2.json)" \
	"256 [1] True" "started bitmap on disk"
qemu-img info -f parallels c.hds > /dev/null || fail "qemu-img info after cbt start"
# cbt stop dropped the extension: its two clusters are leaked, nothing worse.
rc=0
$P check c.hds.cut > check.txt 2>&1 || rc=$?
expect_eq "$rc $(grep -c 'used by nothing' check.txt)" "3 1" "prldisk check after stop and start ($(cat check.txt))"
note "stop and start ok"

# ---- read-only tables ----------------------------------------------------
LR=$(loop_ro c.hds)
expect_fail dm_create r "0 $SZ parallels $LR - 1 cbt" --readonly
dm_create r "0 $SZ parallels $LR -" --readonly
expect_eq "$(cbt_field r)" - "read-only table does not track"
dm_remove r

# ---- features it does not know -------------------------------------------
new_img t.hds 0x1234 2 00112233445566778899
$BM show t.hds | js 'd["features"]' > t.before
LT=$(loop_rw t.hds)
dm_create t "0 $SZ parallels $LT -"
wr /dev/mapper/t 0 65536
dm_remove t
expect_eq "$($BM show t.hds | js 'd["ext"], d["features"]')" "ok $(cat t.before)" "TRANSIT kept"

new_img p.hds 0x1234 0 0011
LP=$(loop_rw p.hds)
dm_create p "0 $SZ parallels $LP -"
wr /dev/mapper/p 0 4096
dm_remove p
expect_eq "$($BM show p.hds | js 'd["ext"]')" none "plain unknown feature dropped"

new_img n.hds 0x1234 1 0011
sha=$(sha256sum < n.hds)
LN=$(loop_rw n.hds)
dmesg_mark
expect_fail dm_create n "0 $SZ parallels $LN -"
dmesg_since_mark | grep -q 'necessary format extension' ||
	fail "refusal does not name the necessary feature: $(dmesg_since_mark | tail -n 3)"
LNR=$(loop_ro n.hds)
dm_create n "0 $SZ parallels $LNR -" --readonly
dm_remove n
expect_eq "$(sha256sum < n.hds)" "$sha" "NECESSARY image untouched"

# A damaged extension: dropped, never trusted.
cp --sparse=always c.hds d.hds
ext=$(python3 -c "import struct; f=open('d.hds','rb'); f.seek(56); print(struct.unpack('<Q', f.read(8))[0])")
printf 'X' | dd of=d.hds bs=1 seek=$((ext * 512 + 100)) conv=notrunc status=none
LD=$(loop_rw d.hds)
dm_create d "0 $SZ parallels $LD -"
expect_eq "$(cbt_field d)" - "damaged extension not loaded"
wr /dev/mapper/d 0 4096
dm_remove d
expect_eq "$($BM show d.hds | js 'd["ext"]')" none "damaged extension dropped"
note "ok ($(($(date +%s) - t0)) s)"
