#!/usr/bin/env python3
"""Structural check of a Parallels image that qemu-img check 7.2 misses.

    check-image.py IMAGE [IN_USE]

From the header and `qemu-img map --output=json`: every allocated cluster
lies in the data area and inside the file, no two BAT entries share a
cluster, and (if IN_USE is given, e.g. 0x312e3276) the in_use field has that
value.  Prints what is wrong and exits 1, or exits 0.
"""
import json
import struct
import subprocess
import sys

img = sys.argv[1]
with open(img, 'rb') as f:
    hdr = f.read(64)
    f.seek(0, 2)
    fsize = f.tell()
magic = hdr[:16]
tracks, bat_entries = struct.unpack_from('<II', hdr, 28)
in_use, data_off = struct.unpack_from('<II', hdr, 44)
if not data_off:
    data_off = (64 + 4 * bat_entries + 511) // 512
cluster = tracks * 512
bad = []
if len(sys.argv) > 2 and in_use != int(sys.argv[2], 0):
    bad.append('in_use is %#x, want %s' % (in_use, sys.argv[2]))

out = subprocess.run(['qemu-img', 'map', '--output=json', '-f', 'parallels', img],
                     check=True, capture_output=True, text=True).stdout
seen = {}
for ext in json.loads(out):
    if not ext.get('data') or 'offset' not in ext:
        continue
    for i in range(0, ext['length'], cluster):
        v = ext['start'] + i
        host = ext['offset'] + i
        vc, hc = v // cluster, (host - data_off * 512)
        if host < data_off * 512:
            bad.append('cluster %d at %d is inside header/BAT' % (vc, host))
        if hc % cluster:
            bad.append('cluster %d at %d is off the cluster grid' % (vc, host))
        if host + cluster > fsize:
            bad.append('cluster %d at %d goes past the end of the file (%d)' % (vc, host, fsize))
        key = host - (host - data_off * 512) % cluster
        if key in seen and seen[key] != vc:
            bad.append('clusters %d and %d share host cluster %d' % (seen[key], vc, key))
        seen.setdefault(key, vc)
for b in bad[:20]:
    print('check-image: %s: %s' % (img, b))
sys.exit(1 if bad else 0)
