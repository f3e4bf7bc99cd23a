#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Hostile or odd arguments and geometry (issue 15):
#   item 2: bitmap export --qcow2 FILE writes FILE, whatever its name: a
#           name starting with '-' used to reach qemu-img as an option, one
#           like "file:x" as a protocol;
#   item 3: create accepts only the cluster sizes both ploop and QEMU
#           accept (powers of two, 32 KiB to 64 MiB), and snapshot refuses
#           a descriptor whose Blocksize is not its images' cluster size.
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd python3 qemu-img ploop

BM="python3 $SRC/tests/tools/bitmap.py"
js() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# ---- item 2: qemu-img never takes a file name as an option ---------------
note "item 2: bitmap export --qcow2 with hostile names"
qemu-img create -q -f parallels -o cluster_size=65536 b.hds 64M
python3 "$SRC/tests/tools/add-bitmap.py" b.hds 128 0 5000 > /dev/null
for name in -h --help -f file:x.qcow2 "-o size=1"; do
	"$PRLDISK" bitmap export b.hds --qcow2 "$name" >&2 ||
		fail "item 2: bitmap export --qcow2 '$name' failed"
	[ -f "./$name" ] || fail "item 2: export to '$name' wrote no file of that name"
	expect_eq "$($BM qcow2 "./$name" | js 'd["bitmaps"][0]["dirty"]')" "[0, 39]" \
		"item 2: the bitmap exported to '$name'"
done
[ ! -e x.qcow2 ] || fail "item 2: 'file:x.qcow2' was taken as a protocol, x.qcow2 written"
# And in a folder whose name starts with '-' (an absolute path is safe).
mkdir -- -dir
"$PRLDISK" bitmap export b.hds --qcow2 -dir/-h >&2 || fail "item 2: export to -dir/-h"
[ -f ./-dir/-h ] || fail "item 2: export to -dir/-h wrote nothing"
"$PRLDISK" bitmap export b.hds --qcow2 "$PWD/-dir/-o" >&2 || fail "item 2: export to an absolute path"
[ -f ./-dir/-o ] || fail "item 2: export to $PWD/-dir/-o wrote nothing"

# ---- item 3: cluster sizes both ploop and QEMU accept ---------------------
note "item 3: cluster sizes"
for cs in 512 3K 16K 96K 128M 1G; do
	expect_err "32K to 64M" "$PRLDISK" create "c$cs" --size 64M --cluster-size "$cs"
	if [ -e "c$cs/DiskDescriptor.xml" ] || [ -e "c$cs/root.hds" ]; then
		fail "item 3: a refused create --cluster-size $cs left files"
	fi
done
for cs in 32K 64K 1M 64M; do
	"$PRLDISK" create "c$cs" --size 64M --cluster-size "$cs" >&2
	qemu-img check -q -f parallels "c$cs/root.hds" || fail "item 3: qemu-img check, $cs clusters"
	cp --sparse=never "c$cs/root.hds" full.copy
	ploop_cmd check -f full.copy >&2 || fail "item 3: ploop check -f, $cs clusters"
	ploop_cmd snapshot-list "c$cs/DiskDescriptor.xml" >&2 ||
		fail "item 3: ploop refuses the descriptor of a disk with $cs clusters"
	rm full.copy
done

# A descriptor whose Blocksize is not its images' cluster size: snapshot
# would add a layer with another grid.  Refused, nothing written.
# files DIR: names, types and content, but for the lock file (taken, so made)
files() {
	(cd "$1" && find . -mindepth 1 -maxdepth 1 ! -name DiskDescriptor.xml.lck -printf '%P %y\n' |
		LC_ALL=C sort &&
		find . -mindepth 1 -maxdepth 1 -type f ! -name DiskDescriptor.xml.lck -exec sha256sum {} + |
		LC_ALL=C sort)
}
"$PRLDISK" create bs --size 64M >&2	# 1 MiB clusters
sed -i 's|<Blocksize>2048</Blocksize>|<Blocksize>128</Blocksize>|' bs/DiskDescriptor.xml
files bs > bs.before
expect_err "Blocksize" "$PRLDISK" snapshot bs
files bs > bs.after
diff bs.before bs.after >&2 || fail "item 3: a refused snapshot changed the folder"
# ... also when it is a layer below the top that does not match.
"$PRLDISK" create low --size 64M --cluster-size 64K >&2
"$PRLDISK" snapshot low >&2
rm low/root.hds
qemu-img create -q -f parallels -o cluster_size=1M low/root.hds 64M
files low > low.before
expect_err "root.hds" "$PRLDISK" snapshot low
files low > low.after
diff low.before low.after >&2 || fail "item 3: a refused snapshot changed the folder"
# ... and a Blocksize neither tool accepts, even if the images agree.
mkdir odd
qemu-img create -q -f parallels -o cluster_size=3k odd/root.hds 64M
sed 's|<Blocksize>2048</Blocksize>|<Blocksize>6</Blocksize>|; s|<File>[^<]*</File>|<File>root.hds</File>|' \
	bs/DiskDescriptor.xml > odd/DiskDescriptor.xml
sed -i 's|<Blocksize>128</Blocksize>|<Blocksize>6</Blocksize>|' odd/DiskDescriptor.xml
"$PRLDISK" check odd >&2 || fail "item 3: a disk QEMU made with 3K clusters does not check"
expect_err "32K to 64M" "$PRLDISK" snapshot odd
