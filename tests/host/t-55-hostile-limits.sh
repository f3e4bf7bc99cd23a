#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Hostile sizes (issue 15): each fails fast, with a message.
#   item 7: a descriptor larger than 1 MiB, with too many elements or
#           attributes (libxml2 checks attributes pairwise: 100k took 19 s),
#           a <File> longer than PATH_MAX or with too many components, a
#           chain deeper than the one limit (1024) that activate,
#           deactivate, status and info share (a 12,000-deep chain made
#           info print 218 MB);
#   item 8: check --repair of a BAT whose entries share clusters needs a
#           copy for each: refused, before writing anything, when the file
#           system has not that much free space (on a small tmpfs); it
#           used to copy until the file system was full.
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd python3 qemu-img qemu-io timeout
patch=$SRC/tests/tools/patch-image.py

# gen KIND DIR: a hostile DiskDescriptor.xml in DIR (see the cases below)
gen() {
	mkdir -p "$2"
	python3 - "$1" "$2/DiskDescriptor.xml" <<'PY'
import sys

kind, out = sys.argv[1], sys.argv[2]
NULL = '{00000000-0000-0000-0000-000000000000}'
TOP = '{5fbaabe3-6958-40ff-92a7-860e329aab41}'


def guid(i):
    return '{%08x-0000-4000-8000-%012x}' % (i, i)


def doc(files, root_attrs='', extra='', top_file=None):
    """A chain: files[0] the root ... files[-1] the top."""
    n = len(files)
    g = [guid(i + 1) for i in range(n - 1)] + [TOP]
    imgs = ''.join('<Image><GUID>%s</GUID><Type>Compressed</Type><File>%s</File></Image>\n'
                   % (g[i], files[i]) for i in range(n))
    shots = ''.join('<Shot><GUID>%s</GUID><ParentGUID>%s</ParentGUID></Shot>\n'
                    % (g[i], g[i - 1] if i else NULL) for i in range(n))
    return ('<?xml version="1.0"?>\n<Parallels_disk_image%s>\n'
            '<Disk_Parameters><Disk_size>131072</Disk_size><Cylinders>130</Cylinders>'
            '<Heads>16</Heads><Sectors>63</Sectors><Padding>0</Padding></Disk_Parameters>\n'
            '<StorageData><Storage><Start>0</Start><End>131072</End><Blocksize>2048</Blocksize>\n'
            '%s</Storage></StorageData>\n<Snapshots><TopGUID>%s</TopGUID>\n%s</Snapshots>%s\n'
            '</Parallels_disk_image>\n' % (root_attrs, imgs, TOP, shots, extra))


if kind == 'big':          # 2 MiB, most of it a comment
    s = doc(['root.hds'], extra='<!-- %s -->' % ('x' * (2 << 20)))
elif kind == 'attrs':      # 100k attributes on one element, under 1 MiB
    s = doc(['root.hds'], root_attrs=''.join(' a%d=""' % i for i in range(100000)))
elif kind == 'elements':   # 200k unknown elements, under 1 MiB
    s = doc(['root.hds'], extra='<x/>' * 200000)
elif kind == 'longpath':   # a File of 6001 bytes: longer than PATH_MAX
    s = doc(['a/' * 3000 + 'x'])
elif kind == 'components':  # a File of 100 components, 200 bytes
    s = doc(['a/' * 99 + 'x'])
elif kind == 'hugepath':   # 400k components, 800 KB
    s = doc(['a/' * 400000 + 'x'])
elif kind.startswith('chain'):  # chainN: N images deep
    s = doc(['root.hds'] + ['root.hds.%d' % i for i in range(1, int(kind[5:]))])
else:
    raise SystemExit('unknown kind ' + kind)
open(out, 'w').write(s)
PY
}

# fast NAME WANT CMD...: prldisk CMD... fails within 3 s, saying WANT in
# one line; its time goes to the log.
fast() {
	local name=$1 want=$2 t0 ms
	shift 2
	t0=$(date +%s%N)
	rc=0
	timeout -k 2 60 "$PRLDISK" "$@" > "$name.out" 2> "$name.err" || rc=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	note "$name: prldisk $1: status $rc in $ms ms, $(wc -c < "$name.out") bytes out: $(head -c 200 "$name.err")"
	[ "$rc" -ne 0 ] || fail "$name: prldisk $* succeeded"
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then fail "$name: prldisk $* did not end in 60 s"; fi
	[ "$ms" -lt 3000 ] || fail "$name: prldisk $* took $ms ms"
	grep -qF -- "$want" "$name.err" ||
		fail "$name: '$(head -c 300 "$name.err")' does not say '$want'"
	expect_eq "$(wc -l < "$name.err")" 1 "item 7: $name: lines on stderr"
}

# ---- item 7: limits that fail fast -----------------------------------------
note "item 7: limits"
gen big big
fast big "larger than 1 MiB" info big
gen attrs attrs
[ "$(stat -c %s attrs/DiskDescriptor.xml)" -lt $((1 << 20)) ] || fail "attrs: too big to test"
fast attrs "attributes" info attrs
fast attrs-check "attributes" check attrs
gen elements elements
fast elements "elements" info elements
gen longpath longpath
fast longpath "PATH_MAX" info longpath
gen components components
fast components "components" info components
gen hugepath hugepath
fast hugepath "PATH_MAX" info hugepath
gen chain1025 chain1025
fast chain1025 "at most 1024" info chain1025
fast chain1025-check "at most 1024" check chain1025
gen chain12000 chain12000
fast chain12000 "larger than 1 MiB" info chain12000
# The limit itself is a disk: 1024 images load (info says each is missing).
gen chain1024 chain1024
rc=0; timeout 60 "$PRLDISK" info chain1024 > chain1024.out 2> chain1024.err || rc=$?
expect_eq "$rc" 1 "item 7: info of a 1024-deep chain whose files are missing"
! grep -q "at most" chain1024.err || fail "item 7: a 1024-deep chain is refused: $(head -c 300 chain1024.err)"
expect_eq "$(grep -c 'No such file' chain1024.out)" 1024 "item 7: images info lists"
[ "$(wc -c < chain1024.out)" -lt $((8 << 20)) ] || fail "item 7: info of 1024 images printed $(wc -c < chain1024.out) bytes"
note "chain1024: info printed $(wc -c < chain1024.out) bytes"

# ---- item 8: a repair that needs more space than there is -----------------
note "item 8: check --repair and free space"
[ "$(id -u)" = 0 ] || skip "item 8 mounts a small tmpfs: run as root"
mkdir small
mount -t tmpfs -o size=8M tmpfs small
at_exit "! mountpoint -q '$T/small' || umount '$T/small'"
entry() { od -An -tu4 -j$((64 + 4 * $2)) -N4 "$1" | tr -d ' '; }
# shared IMAGE N: 64 KiB clusters, 16 MiB: 256 entries; cluster 0 written,
# then entries 1..N made to share its cluster (each needs a copy of its
# own: N * 64 KiB).  Made outside the tmpfs (QEMU preallocates 128 MiB).
shared() {
	local e0 i args=() tmp=$T/shared.hds
	rm -f "$1" "$tmp"
	qemu-img create -q -f parallels -o cluster_size=64k "$tmp" 16M
	qemu-io -f parallels -c "write -P 0x5a 0 64k" "$tmp" >/dev/null
	e0=$(entry "$tmp" 0)
	for i in $(seq 1 "$2"); do args+=("bat[$i]=$e0"); done
	python3 "$patch" "$tmp" "${args[@]}"
	mv "$tmp" "$1"
}
shared small/dup.hds 255		# 16 MiB of copies, 8 MiB of room
sha256sum small/dup.hds > dup.sum
free0=$(df -B1 --output=avail small | tail -n 1)
fast dup-repair "needs" check --repair small/dup.hds
grep -qF "16 MiB" dup-repair.err || fail "item 8: the message does not say how much is needed"
sha256sum -c --quiet dup.sum >&2 || fail "item 8: a refused repair changed the image"
expect_eq "$(df -B1 --output=avail small | tail -n 1)" "$free0" "item 8: free space after a refused repair"
rc=0; "$PRLDISK" check small/dup.hds >&2 || rc=$?
expect_eq "$rc" 2 "item 8: the image is still found corrupt"
# One that fits is repaired, and reads the same.
shared small/fit.hds 15			# 960 KiB of copies
qemu-img convert -f parallels -O raw small/fit.hds fit.before.raw
rc=0; "$PRLDISK" check --repair small/fit.hds >&2 || rc=$?
expect_eq "$rc" 0 "item 8: repair of 15 shared entries"
qemu-img convert -f parallels -O raw small/fit.hds fit.after.raw
cmp fit.before.raw fit.after.raw || fail "item 8: the repair changed what the disk reads"
qemu-img check -q -f parallels small/fit.hds || fail "item 8: qemu-img check after the repair"
