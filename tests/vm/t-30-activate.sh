#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# prldisk activate / deactivate / list / status on real disks:
# - a ploop-made snapshot tree (a branch left by snapshot-switch), data
#   written by QEMU into every layer: each node activates (the top rw, each
#   snapshot with --snapshot, read-only) and reads as QEMU's flattened view;
# - writes through the activated top, deactivate: qemu-img check clean, the
#   chain equals a raw reference, the file truncated to image_end; again
#   after re-activation;
# - double activation refused; a missing or unreadable image, an absolute path without
#   --allow-external-paths and an in-use image each refused with one line,
#   leaving no dm or loop device; --repair and --read-only of an in-use
#   image; deactivate idempotent; leftovers of an interrupted activation
#   (a layer table made by hand, a pre-extended file) cleaned by deactivate;
# - a Plain root below a snapshot and a Plain disk alone (linear);
# - list / status --json parse.
# vm-timeout: 300
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img qemu-io ploop python3 dmsetup losetup

P=$SRC/userspace/prldisk
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"
chain() { python3 "$SRC/tests/tools/chain.py" "$@"; }
TOPG='{5fbaabe3-6958-40ff-92a7-860e329aab41}'

# Our devices come down at exit whatever happens (deactivate is idempotent).
at_exit "cd / && for n in d d2 e2 e4 pl plt x x2; do $P deactivate \$n >/dev/null 2>&1; done"
# deactivate NAME (from / : "d" in the scratch dir would be the disk's folder)
deact() { (cd / && $P deactivate "$@"); }

# Nothing of ours is active: no dm device, no loop device.

# expect_refused MSG-REGEX CMD...: CMD fails with one line on stderr matching.
expect_refused() {
	_re=$1
	shift
	if "$@" > err.out 2> err.txt; then
		fail "succeeded but should have failed: $*"
	fi
	[ "$(wc -l < err.txt)" -eq 1 ] || fail "$*: not one line: $(cat err.txt)"
	grep -Eq "$_re" err.txt || fail "$*: message '$(cat err.txt)' lacks /$_re/"
	note "refused as expected: $(cat err.txt)"
}

json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# ---- a ploop tree: root <- G2 (branch), root <- top ------------------------
mkdir d
(cd d && ploop_cmd init -s 16M -t none root.hds && ploop_cmd snapshot DiskDescriptor.xml) \
	> ploop.log 2>&1 || { cat ploop.log; fail "ploop init/snapshot"; }
X=$T/d/DiskDescriptor.xml
# Image options by hand while building (ploop names deltas root.hds.{uuid});
# the oracle below is chain.py's own reading of the descriptor.
ROOT=$T/d/root.hds
D1=$(ls "$T"/d/root.hds.\{*\})
b_root="backing.driver=parallels,backing.file.filename=$ROOT"
qemu-io -f parallels -c "write -P 0x11 0 4M" -c "write -P 0x12 10M 1M" "$ROOT" >/dev/null
qemu-io --image-opts -c "write -P 0x21 2M 1M" -c "write -P 0x22 $((14 << 20)) 512" \
	"driver=parallels,file.filename=$D1,$b_root" >/dev/null
(cd d && ploop_cmd snapshot DiskDescriptor.xml) >> ploop.log 2>&1 || fail "ploop snapshot"
D2=$(ls "$T"/d/root.hds.\{*\} | grep -vxF "$D1")
qemu-io --image-opts -c "write -P 0x31 1M 64k" \
	"driver=parallels,file.filename=$D2,backing.driver=parallels,backing.file.filename=$D1,backing.backing.driver=parallels,backing.backing.file.filename=$ROOT" >/dev/null
{ read -r _; read -r G1; read -r G2; } < <(chain guids "$X")	# root, then D1
(cd d && ploop_cmd snapshot-switch -u "$G1" DiskDescriptor.xml) >> ploop.log 2>&1 ||
	fail "ploop snapshot-switch"
TOPF=$(ls "$T"/d/root.hds.\{*\} | grep -vxF "$D1")
qemu-io --image-opts -c "write -P 0x41 3M 2M" -c "write -P 0x42 $((15 << 20)) 1M" \
	"driver=parallels,file.filename=$TOPF,$b_root" >/dev/null
TOPOPTS=$(chain opts "$X")
expect_eq "$TOPOPTS" "driver=parallels,file.filename=$TOPF,$b_root" "the tree ploop made"
for g in "$TOPG" "$G1" "$G2"; do chain flat "$X" "want-$g.raw" "$g"; done
t0=$(date +%s)

# ---- every node activates and reads as QEMU's view -------------------------
dev=$($P activate "$X" 2> act.err)
[ ! -s act.err ] || fail "activate printed: $(cat act.err)"
expect_eq "$dev" /dev/mapper/d "device path"
[ -b /dev/mapper/d ] || fail "no /dev/mapper/d"
cmp /dev/mapper/d "want-$TOPG.raw" || fail "the top reads other data than QEMU"
$P status d --json > st.json
expect_eq "$(json 'd["read_only"], len(d["layers"]), d["layers"][0]["state"],
	d["layers"][0]["direct_io"], d["layers"][1]["read_only"],
	d["layers"][0]["guid"], d["layers"][1]["guid"], d["layers"][1]["name"]' < st.json)" \
	"False 2 rw True True $TOPG $G1 d-${G1:1:36}" "status of the top"
$P status d > st.txt || fail "status (text)"
$P list --json | json '[x["name"] for x in d["disks"]]' > list.txt
expect_eq "$(cat list.txt)" "['d']" "list"
$P list >> st.txt || fail "list (text)"
sed 's/^/# /' st.txt >&2
[ "$(stat -c %s "$TOPF")" -ge $((16 << 20)) ] || fail "the top file was not pre-extended"

# Double activation: refused under the same name and under another one.
expect_refused 'is active|exists already' $P activate "$X"
expect_refused 'is active.*deactivate d' $P activate "$X" --name d2
# A snapshot of the live disk, read-only under another name, is fine.
dev2=$($P activate "$X" --snapshot "$G2" --name d2)
cmp "$dev2" "want-$G2.raw" || fail "snapshot $G2 differs (beside the live top)"
expect_eq "$(blockdev --getro "$dev2")" 1 "snapshot device read-only"
deact d2
deact d
nothing_left "after deactivate"
for g in "$G1" "$G2"; do
	$P activate "$X" --snapshot "$g" > /dev/null
	cmp -n "$(blockdev --getsize64 /dev/mapper/d)" /dev/mapper/d "want-$g.raw" ||
		fail "snapshot $g differs"
	expect_eq "$($P status d --json | json 'd["read_only"]')" True "$g read-only"
	$P deactivate "$X"
done
$P activate "$X" --read-only > /dev/null
cmp /dev/mapper/d "want-$TOPG.raw" || fail "read-only top differs"
expect_fail dd if=/dev/zero of=/dev/mapper/d bs=4k count=1 oflag=direct status=none
$P deactivate d
nothing_left "after the read-only nodes"
qemu-img check -q -f parallels "$TOPF" || fail "a read-only activation changed the top"
note "every node reads as QEMU's view ($(($(date +%s) - t0)) s)"

# ---- writes through the top ---------------------------------------------
cp "want-$TOPG.raw" ref.raw
sha256sum "$T"/d/root.hds* | grep -vF "$TOPF" > lower.sums
$P activate "$X" > /dev/null
python3 "$SRC/tests/tools/randwrite.py" 30 30 $((1 << 20)) /dev/mapper/d ref.raw
cmp /dev/mapper/d ref.raw || fail "the top reads other data than written"
end=$($P status d --json | json 'd["layers"][0]["image_end_sector"]')
[ "$(stat -c %s "$TOPF")" -ge $((end * 512)) ] || fail "top file shorter than its end while active"
$P deactivate "$X"
nothing_left "after the writes"
expect_eq "$(stat -c %s "$TOPF")" $((end * 512)) "top file truncated to image_end"
qemu-img check -q -f parallels "$TOPF" || fail "qemu-img check of the written top"
sha256sum -c --quiet lower.sums || fail "a lower image changed"
qemu-img compare -q --image-opts "$TOPOPTS" "driver=raw,file.filename=ref.raw" ||
	fail "QEMU reads other data than written"
$P activate "$X" > /dev/null
cmp /dev/mapper/d ref.raw || fail "re-activated top differs"
python3 "$SRC/tests/tools/randwrite.py" 31 10 $((1 << 20)) /dev/mapper/d ref.raw
deact d
qemu-img check -q -f parallels "$TOPF" || fail "qemu-img check after the second round"
qemu-img compare -q --image-opts "$TOPOPTS" "driver=raw,file.filename=ref.raw" ||
	fail "second round differs"
note "writes ok ($(($(date +%s) - t0)) s)"

# ---- deactivate is idempotent --------------------------------------------
expect_eq "$(deact d)" "d is not active" "deactivate of an inactive disk"
$P deactivate "$X" > /dev/null || fail "deactivate XML, inactive"
$P deactivate nosuchdisk > /dev/null || fail "deactivate of an unknown name"

# ---- refusals: one line each, nothing left ---------------------------------
cp -a d e1
rm e1/root.hds
expect_refused 'root.hds.*(No such file|cannot open)' $P activate e1
nothing_left "missing image"

# Unreadable: a layer below the top that is not a Parallels image.
cp -a d e4
printf 'XXXXXXXXXXXXXXXX' | dd of=e4/root.hds bs=1 conv=notrunc status=none
expect_refused 'root.hds.*Bad magic' $P activate e4
nothing_left "unreadable image"

mkdir e2
cp -a d/. e2/
sed -i "s|<File>root.hds</File>|<File>$T/e2/root.hds</File>|" e2/DiskDescriptor.xml
expect_refused 'allow-external-paths' $P activate e2
nothing_left "absolute path"
$P activate e2 --allow-external-paths > /dev/null
cmp /dev/mapper/e2 ref.raw || fail "external-path disk differs"
$P deactivate e2 --allow-external-paths
nothing_left "external paths"

# In use: the top's in_use field (offset 44) says open.
cp -a d e3
E3TOP=$T/e3/$(basename "$TOPF")
printf 'Ynot' | dd of="$E3TOP" bs=1 seek=44 conv=notrunc status=none
expect_refused 'not closed cleanly.*check --repair' $P activate e3 --name x
nothing_left "in-use image"
$P activate e3 --name x --read-only > /dev/null
expect_eq "$($P status x --json | json 'd["layers"][0]["state"]')" needs_check "in-use, read-only"
cmp /dev/mapper/x ref.raw || fail "in-use image read-only differs"
deact x
$P activate e3 --name x --repair > /dev/null 2> repair.txt || fail "activate --repair: $(cat repair.txt)"
grep -q 'repaired' repair.txt || fail "--repair said nothing: $(cat repair.txt)"
expect_eq "$($P status x --json | json 'd["layers"][0]["state"]')" rw "repaired image"
deact x
qemu-img check -q -f parallels "$E3TOP" || fail "qemu-img check after --repair"
nothing_left "repair"

expect_fail $P activate "$X" --snapshot nonsense
expect_refused 'no snapshot' $P activate "$X" --snapshot '{11111111-2222-3333-4444-555555555555}'
expect_fail $P activate "$X" --name 'a/b'
nothing_left "bad arguments"
note "refusals ok ($(($(date +%s) - t0)) s)"

# ---- leftovers of an interrupted activation ---------------------------------
# The lower layer's table, made by hand as a crash after step 5 would leave it.
# (losetup -d of a held loop device makes it autoclear, as activate makes them)
ll=$(losetup -r -f --show "$T/d/root.hds")
dmsetup create --readonly "d-${G1:1:36}" --table "0 32768 parallels $ll -"
losetup -d "$ll"
expect_refused 'interrupted activation.*deactivate d' $P activate "$X"
$P list --json | json '[(x["name"], x["leftover"]) for x in d["disks"]]' > list.txt
expect_eq "$(cat list.txt)" "[('d-${G1:1:36}', True)]" "list shows the leftover"
deact d 2> left.txt || fail "deactivate of leftovers: $(cat left.txt)"
grep -q 'interrupted' left.txt || fail "deactivate did not say what it removed"
nothing_left "leftover layer"
# A pre-extended top file, as a crash after step 3 leaves it.
size=$(stat -c %s "$TOPF")
truncate -s 64M "$TOPF"
$P deactivate "$X" 2> left.txt || fail "deactivate XML of a pre-extended file"
expect_eq "$(stat -c %s "$TOPF")" "$size" "pre-extension cut back"
# prldisk killed at any moment of activate or deactivate: deactivate (and
# activate again) recovers, the image stays clean.
for delay in 0.05 0.3; do
	timeout -s KILL $delay $P activate "$X" > /dev/null 2>&1 || true
	$P deactivate "$X" > /dev/null 2>&1 || fail "deactivate after activate killed at $delay s"
	nothing_left "activate killed at $delay s"
	$P activate "$X" > /dev/null || fail "activate after a kill at $delay s"
	timeout -s KILL $delay $P deactivate "$X" > /dev/null 2>&1 || true
	$P deactivate "$X" > /dev/null 2>&1 || fail "deactivate after deactivate killed at $delay s"
	nothing_left "deactivate killed at $delay s"
	qemu-img check -q -f parallels "$TOPF" || fail "top not clean after a kill at $delay s"
done
$P activate "$X" > /dev/null
cmp /dev/mapper/d ref.raw || fail "data changed by the kills"
deact d
nothing_left "leftovers"
note "leftovers ok ($(($(date +%s) - t0)) s)"

# ---- block-device images: used as they are, never detached or truncated ----
cp -a d bd
lr=$(losetup -f --show "$T/bd/root.hds")
lt=$(losetup -f --show "$T/bd/$(basename "$TOPF")")
sed -i -e "s|<File>root.hds</File>|<File>$lr</File>|" \
	-e "s|<File>$(basename "$TOPF")</File>|<File>$lt</File>|" bd/DiskDescriptor.xml
tsize=$(stat -c %s "bd/$(basename "$TOPF")")
$P activate bd --allow-external-paths --name x > /dev/null
cmp /dev/mapper/x ref.raw || fail "block-device images differ"
expect_eq "$($P status x --json | json 'd["layers"][0]["image_device"], d["layers"][1]["image_device"]')" \
	"$lt $lr" "block devices in status"
expect_refused 'is active' $P activate bd --allow-external-paths --name x2
deact x
expect_eq "$(losetup -a | wc -l)" 2 "the user's loop devices are still there"
expect_eq "$(stat -c %s "bd/$(basename "$TOPF")")" "$tsize" "file behind a block device untouched"
losetup -d "$lr" "$lt"
nothing_left "block devices"

# ---- Plain root ------------------------------------------------------------
mkdir pl
head -c $((6 << 20)) /dev/urandom > pl/root.raw
truncate -s 16M pl/root.raw
qemu-img create -q -f parallels -o cluster_size=64k pl/top.hds 16M
qemu-io -f parallels -c "write -P 0x51 1M 100k" -c "write -P 0x52 $((12 << 20)) 64k" pl/top.hds >/dev/null
cat > pl/DiskDescriptor.xml <<EOF
<?xml version="1.0"?>
<Parallels_disk_image>
  <Disk_Parameters>
    <Disk_size>32768</Disk_size>
    <Cylinders>32</Cylinders>
    <Heads>16</Heads>
    <Sectors>63</Sectors>
    <Padding>0</Padding>
  </Disk_Parameters>
  <StorageData>
    <Storage>
      <Start>0</Start>
      <End>32768</End>
      <Blocksize>128</Blocksize>
      <Image>
        <GUID>{aaaaaaaa-1111-2222-3333-444444444444}</GUID>
        <Type>Plain</Type>
        <File>root.raw</File>
      </Image>
      <Image>
        <GUID>$TOPG</GUID>
        <Type>Compressed</Type>
        <File>top.hds</File>
      </Image>
    </Storage>
  </StorageData>
  <Snapshots>
    <Shot>
      <GUID>{aaaaaaaa-1111-2222-3333-444444444444}</GUID>
      <ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID>
    </Shot>
    <Shot>
      <GUID>$TOPG</GUID>
      <ParentGUID>{aaaaaaaa-1111-2222-3333-444444444444}</ParentGUID>
    </Shot>
  </Snapshots>
</Parallels_disk_image>
EOF
chain flat pl/DiskDescriptor.xml want-pl.raw
expect_eq "$($P activate pl --json | json 'd["device"], d["layers"][0]["state"]')" \
	"/dev/mapper/pl rw" "activate --json"
cmp /dev/mapper/pl want-pl.raw || fail "Plain root below a snapshot differs"
expect_eq "$($P status pl --json | json 'len(d["layers"]), d["layers"][1]["type"], d["layers"][1]["guid"]')" \
	"2 plain {aaaaaaaa-1111-2222-3333-444444444444}" "Plain root in status"
deact pl
$P activate pl --snapshot '{aaaaaaaa-1111-2222-3333-444444444444}' --name plt > /dev/null
cmp /dev/mapper/plt pl/root.raw || fail "the Plain root alone differs"
expect_eq "$(dmsetup table plt | awk '{ print $3 }')" linear "Plain alone: linear"
deact plt
nothing_left "Plain"
note "Plain root ok ($(($(date +%s) - t0)) s)"
