#!/usr/bin/env python3
"""A closed v2 Parallels image whose format extension holds one dirty bitmap
of any size, written independently of prldisk (parallels.txt, "Format
Extension"), for the memory-limit tests:

    hostile-bitmap.py IMAGE CLUSTER_SECTORS NB_SECTORS GRANULARITY L1_VALUE

The BAT is empty (sparse, as large as NB_SECTORS needs); the extension is
the first data cluster, with a correct MD5, and the bitmap's L1 table has
as many entries as QEMU's layout needs (64-bit words), each L1_VALUE (0:
all clear, 1: all set; "data": a cluster of its own after the extension,
every other granule set).  The file is sparse: a 64 TiB disk takes a few
MiB.  Prints the bitmap's bits.
"""
import hashlib
import struct
import sys

img = sys.argv[1]
cs, nb, gran = (int(x, 0) for x in sys.argv[2:5])
data = sys.argv[5] == 'data'
l1v = 0 if data else int(sys.argv[5], 0)
cb = cs * 512
bat_entries = (nb + cs - 1) // cs
meta = 64 + 4 * bat_entries
data_off = (meta + cb - 1) // cb * cs            # in sectors, cluster aligned
bits = (nb + gran - 1) // gran
nbytes = (bits + 63) // 64 * 8
l1 = (nbytes + cb - 1) // cb
def data_at(i):
    return data_off + (i + 1) * cs


feat = struct.pack('<Q16sII', nb, bytes(range(16)), gran, l1) + b''.join(struct.pack('<Q', data_at(i) if data else l1v) for i in range(l1))
body = struct.pack('<QQII', 0x20385FAE252CB34A, 0, len(feat), 0) + feat
body += b'\0' * (-len(body) % 8) + struct.pack('<QQII', 0, 0, 0, 0)
if len(body) > cb - 24:
    raise SystemExit('the L1 table does not fit one cluster')
body = body.ljust(cb - 24, b'\0')
hdr = struct.pack('<16sIIIIIQIIIQ', b'WithouFreSpacExt', 2, 16, 32, cs,
                  bat_entries, nb, 0x312e3276, data_off, 0, data_off)
with open(img, 'wb') as f:
    f.write(hdr)
    f.seek(data_off * 512)
    f.write(struct.pack('<Q', 0xAB234CEF23DCEA87) + hashlib.md5(body).digest() + body)
    for i in range(l1 if data else 0):
        f.seek(data_at(i) * 512)
        f.write(b'\x55' * cb)
print(bits)
