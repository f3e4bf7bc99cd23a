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
