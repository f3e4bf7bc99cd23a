#!/usr/bin/env python3
"""Give a closed Parallels image a format extension with one dirty bitmap,
written independently of prldisk (parallels.txt, "Format Extension").

    add-bitmap.py IMAGE GRANULARITY_SECTORS SECTOR...

The bitmap marks the granules that hold each SECTOR given.  The extension
and bitmap clusters are appended to the file; in_use is set to "closed
v2.1" (0x312e3276), which is when a bitmap may be trusted.  Prints the
bitmap's id.
"""
import hashlib
import os
import struct
import sys
import uuid

img, gran = sys.argv[1], int(sys.argv[2])
sectors = [int(x) for x in sys.argv[3:]]
with open(img, 'r+b') as f:
    hdr = bytearray(f.read(64))
    magic = bytes(hdr[:16])
    tracks, bat_entries = struct.unpack_from('<II', hdr, 28)
    nb_sectors, = struct.unpack_from('<Q', hdr, 36)
    cb = tracks * 512
    f.seek(0, 2)
    end = f.tell()
    end = (end + cb - 1) // cb * cb       # next whole cluster
    ext_at, bm_at = end, end + cb
    bits = (nb_sectors + gran - 1) // gran
    nbytes = (bits + 63) // 64 * 8        # QEMU's 64-bit words
    l1 = (nbytes + cb - 1) // cb
    if l1 != 1:
        raise SystemExit('this tool writes one bitmap cluster only')
    bm = bytearray(cb)
    for s in sectors:
        b = s // gran
        bm[b // 8] |= 1 << (b % 8)
    bid = uuid.uuid4()
    feat = struct.pack('<Q16sII', nb_sectors, bid.bytes, gran, l1) + struct.pack('<Q', bm_at // 512)   # L1 entries in sectors, as QEMU reads them
    body = struct.pack('<QQII', 0x20385FAE252CB34A, 0, len(feat), 0) + feat
    body += b'\0' * (-len(body) % 8) + struct.pack('<QQII', 0, 0, 0, 0)
    body = body.ljust(cb - 24, b'\0')
    ext = struct.pack('<Q', 0xAB234CEF23DCEA87) + hashlib.md5(body).digest() + body
    f.seek(ext_at)
    f.write(ext)
    f.seek(bm_at)
    f.write(bm)
    struct.pack_into('<Q', hdr, 56, ext_at // 512)
    struct.pack_into('<I', hdr, 44, 0x312e3276)
    f.seek(0)
    f.write(hdr)
print('{%s}' % bid)
