#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# mkcorpus-folder.sh OUTDIR PRLDISK: seeds for tests/fuzz/fuzz_folder.c,
# packed from valid disk folders (see fuzz_folder.c for the framing):
# descriptors written by prldisk (create, snapshot), images by prldisk or
# by QEMU (512-byte clusters, so a seed with data stays small), dirty
# bitmaps by tests/tools/add-bitmap.py.  Each folder must check clean (or
# leaks only) with prldisk before it is packed.  Without qemu-img and
# qemu-io only the prldisk-made seeds are written.
set -eu
out=$(mkdir -p "$1" && cd "$1" && pwd)
prldisk=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
top=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mkcorpus-folder.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# pack FOLDER NAME: the seed, under 16 KiB
pack() {
	python3 - "$1" "$out/$2" <<'PY'
import re
import struct
import sys

folder, out = sys.argv[1], sys.argv[2]
xml = open(folder + '/DiskDescriptor.xml', 'rb').read()
sections = [xml]
for name in re.findall(rb'<File>([^<]*)</File>', xml)[:3]:
    img = bytearray(open(folder + '/' + name.decode(), 'rb').read())
    ext = b''
    if img[:16] in (b'WithouFreSpacExt', b'WithoutFreeSpace'):
        cb = struct.unpack_from('<I', img, 28)[0] * 512
        ext_off = struct.unpack_from('<Q', img, 56)[0] * 512
        if ext_off:   # its body goes apart; the fuzzer seals it again
            ext = bytes(img[ext_off + 24:ext_off + cb]).rstrip(b'\0')
            img[ext_off:ext_off + cb] = bytes(cb)
    sections += [bytes(img).rstrip(b'\0'), ext]
# A section that ends in '@' would lend it to the separator: one zero
# more (the fuzzer pads with zeros anyway).
sections = [s + b'\0' if s.endswith(b'@') else s for s in sections]
data = b'@@@@'.join(sections)
if data.split(b'@@@@') != sections or len(data) > 16384:
    raise SystemExit('%s: cannot pack (%d bytes)' % (out, len(data)))
open(out, 'wb').write(data)
PY
}

# disk NAME LAYERS: prldisk create (16 KiB, 32 KiB clusters) and LAYERS-1
# offline snapshots.
disk() {
	local i
	"$prldisk" create "$1" --size 16K --cluster-size 32K > /dev/null
	for ((i = 1; i < $2; i++)); do "$prldisk" snapshot "$1" > /dev/null; done
}

# ok FOLDER: prldisk check says clean or leaks only
ok() {
	local rc=0
	"$prldisk" check "$1" > "$1.check" 2>&1 || rc=$?
	[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || { cat "$1.check" >&2; exit 1; }
}

files() { sed -n 's|.*<File>\(.*\)</File>.*|\1|p' "$1/DiskDescriptor.xml"; }

for n in 1 2 3; do
	disk "prl$n" "$n"
	ok "prl$n"
	pack "prl$n" "prldisk-$n"
done
disk prlbm 2
python3 "$top/tests/tools/add-bitmap.py" "prlbm/$(files prlbm | tail -n 1)" 1 0 31 > /dev/null
ok prlbm
pack prlbm prldisk-bitmap 2> /dev/null || true	# 32 KiB clusters: may not fit

if command -v qemu-img > /dev/null && command -v qemu-io > /dev/null; then
	# qdisk NAME LAYERS: as disk, each image then made again by QEMU
	# with 512-byte clusters (Blocksize 1), each layer writing its sectors.
	qdisk() {
		local f p=161 s=0
		disk "$1" "$2"
		sed -i 's|<Blocksize>64</Blocksize>|<Blocksize>1</Blocksize>|' "$1/DiskDescriptor.xml"
		while read -r f; do
			rm -f "$1/$f"
			qemu-img create -q -f parallels -o cluster_size=512 "$1/$f" 16K
			qemu-io -f parallels -c "write -P $p $((s * 512)) 1k" "$1/$f" > /dev/null
			p=$((p + 1)) s=$((s + 5))
		done < <(files "$1")
	}
	qdisk q1 1
	ok q1
	pack q1 qemu-1
	qdisk q3 3
	ok q3
	pack q3 qemu-3
	qdisk qbm 2
	python3 "$top/tests/tools/add-bitmap.py" "qbm/$(files qbm | head -n 1)" 1 3 4 30 > /dev/null
	python3 "$top/tests/tools/add-bitmap.py" "qbm/$(files qbm | tail -n 1)" 2 0 17 > /dev/null
	ok qbm
	pack qbm qemu-bitmaps
	qdisk qbm1 1
	python3 "$top/tests/tools/add-bitmap.py" "qbm1/$(files qbm1)" 4 0 8 31 > /dev/null
	ok qbm1
	pack qbm1 qemu-bitmap-root
fi
ls -l "$out"
