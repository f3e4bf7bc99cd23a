#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Disks made by Debian's ploop (an independent implementation): a chain
# (init, snapshot, snapshot) and a tree (snapshot-switch) are read by
# prldisk info, drawn as a tree, and pass prldisk check; their images,
# written by QEMU, check clean too.
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd ploop qemu-img qemu-io python3
chain=$SRC/tests/tools/chain.py

mkdir chain && cd chain
ploop_cmd init -s 64M -t none -f ploop1 root.hds >/dev/null 2>&1 || fail "ploop init"
qemu-io -f parallels -c "write -P 0x11 0 3M" root.hds >/dev/null
s1=$(ploop_cmd snapshot DiskDescriptor.xml 2>&1 | sed -n 's/^ploop snapshot \({[^}]*}\).*/\1/p')
[ -n "$s1" ] || fail "ploop snapshot printed no GUID"
top=$(python3 "$chain" opts DiskDescriptor.xml | sed 's/^driver=parallels,file.filename=\([^,]*\),.*/\1/')
qemu-io -f parallels -c "write -P 0x22 1M 1M" "$top" >/dev/null
s2=$(ploop_cmd snapshot DiskDescriptor.xml 2>&1 | sed -n 's/^ploop snapshot \({[^}]*}\).*/\1/p')
cd ..
sha256sum chain/* > before.sum

"$PRLDISK" info chain > info.txt || fail "prldisk info of a ploop chain"
cat info.txt >&2
grep -qF "$s1" info.txt && grep -qF "$s2" info.txt || fail "info does not list the snapshots"
grep -q '└─ {5fbaabe3-6958-40ff-92a7-860e329aab41} .*\[top\]' info.txt || fail "the top is not drawn as a leaf"
"$PRLDISK" info --json chain/DiskDescriptor.xml > info.json
python3 - "$s1" "$s2" <<'PY' || fail "info --json"
import json, sys
j = json.load(open('info.json'))
s1, s2 = sys.argv[1:]
assert j['top'] == '{5fbaabe3-6958-40ff-92a7-860e329aab41}', j['top']
assert j['virtual_size'] == 64 << 20
imgs = {i['guid']: i for i in j['images']}
assert set(imgs) == {s1, s2, j['top']}, imgs.keys()
assert imgs[s2]['parent'] == s1 and imgs[j['top']]['parent'] == s2
assert imgs[s1]['image']['allocated_clusters'] == 3, imgs[s1]['image']
assert imgs[s2]['image']['allocated_clusters'] == 1
assert imgs[s1]['image']['format'] == 'v1'
PY
rc=0; "$PRLDISK" check chain >&2 || rc=$?
expect_eq "$rc" 0 "prldisk check of a ploop chain"
sha256sum -c --quiet before.sum >&2 || fail "prldisk info/check changed a file"

# A tree: back to the first snapshot, then a branch from there.
ploop_cmd snapshot-switch -u "$s1" chain/DiskDescriptor.xml >/dev/null 2>&1 || fail "ploop snapshot-switch"
sha256sum chain/* > tree.sum
"$PRLDISK" info chain > tree.txt || fail "prldisk info of a ploop tree"
cat tree.txt >&2
# s1 now has two children: s2 and the new top.
grep -qF -e "├─ $s2" -e "├─ {5fbaabe3" tree.txt || fail "the tree has no branch"
rc=0; "$PRLDISK" check --json chain > check.json || rc=$?
expect_eq "$rc" 0 "prldisk check of a ploop tree"
python3 -c "import json; j = json.load(open('check.json')); assert j['result'] == 'clean' and len(j['images']) == 3, j" ||
	fail "check --json"

sha256sum -c --quiet tree.sum >&2 || fail "prldisk info/check of the tree changed a file"
