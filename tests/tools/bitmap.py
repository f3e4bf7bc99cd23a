#!/usr/bin/env python3
"""Dirty bitmaps, read and written independently of prldisk and the kernel
(parallels.txt "Format Extension"; QEMU's qcow2 bitmap layout).

    bitmap.py show IMAGE         JSON: in_use, ext (none|bad:<why>|ok),
                                 bitmaps [{id, granularity, dirty: [granule...]}],
                                 features [{magic, flags, data (hex)}] other than bitmaps
    bitmap.py qcow2 FILE         JSON: bitmaps [{name, granularity, dirty}]
                                 of a qcow2 file (granularity in sectors)
    bitmap.py granules BYTES OFFSET:LENGTH...
                                 the sorted granules of BYTES that those byte
                                 ranges touch (what a bitmap should show)
    bitmap.py add-feature IMAGE MAGIC FLAGS HEXDATA
                                 give a closed image a format extension holding
                                 one feature (appended cluster, MD5, closed v2.1)

Granule n is bit n % 8 of byte n / 8 of the serialized bitmap.
"""
import hashlib
import json
import struct
import sys
import uuid

EXT_MAGIC = 0xAB234CEF23DCEA87
BITMAP = 0x20385FAE252CB34A
CLOSED_V21 = 0x312e3276


def header(f):
    f.seek(0)
    h = f.read(64)
    tracks, = struct.unpack_from('<I', h, 28)
    nb_sectors, = struct.unpack_from('<Q', h, 36)
    in_use, = struct.unpack_from('<I', h, 44)
    ext_off, = struct.unpack_from('<Q', h, 56)
    return tracks * 512, nb_sectors, in_use, ext_off


def dirty_of(data, nbits):
    return [n for n in range(nbits) if data[n // 8] >> (n % 8) & 1]


def show(path):
    out = {'ext': 'none', 'bitmaps': [], 'features': []}
    with open(path, 'rb') as f:
        cb, nb, in_use, ext_off = header(f)
        out['in_use'] = in_use
        out['closed_v21'] = in_use == CLOSED_V21
        if not ext_off:
            return out
        f.seek(ext_off * 512)
        ext = f.read(cb)
        magic, = struct.unpack_from('<Q', ext, 0)
        if magic != EXT_MAGIC:
            out['ext'] = 'bad:magic'
            return out
        if hashlib.md5(ext[24:]).digest() != ext[8:24]:
            out['ext'] = 'bad:md5'
            return out
        out['ext'] = 'ok'
        pos = 24
        while True:
            fm, fl, size = struct.unpack_from('<QQI', ext, pos)
            pos += 24
            if fm == 0:
                break
            data = ext[pos:pos + size]
            if fm == BITMAP:
                bsize, bid, gran, l1n = struct.unpack_from('<Q16sII', data, 0)
                l1 = struct.unpack_from('<%dQ' % l1n, data, 32)
                nbits = (bsize + gran - 1) // gran
                bits = bytearray()
                for e in l1:
                    if e == 0:
                        bits += bytes(cb)
                    elif e == 1:
                        bits += b'\xff' * cb
                    else:
                        f.seek(e * 512)
                        bits += f.read(cb)
                out['bitmaps'].append({'id': str(uuid.UUID(bytes=bid)),
                                       'granularity': gran, 'bits': nbits,
                                       'l1': list(l1),
                                       'dirty': dirty_of(bits, nbits)})
            else:
                out['features'].append({'magic': '%016x' % fm, 'flags': fl,
                                        'data': data.hex()})
            pos += (size + 7) // 8 * 8
    return out


def qcow2(path):
    out = {'bitmaps': []}
    with open(path, 'rb') as f:
        h = f.read(104)
        cluster_bits, = struct.unpack_from('>I', h, 20)
        hlen, = struct.unpack_from('>I', h, 100)
        cs = 1 << cluster_bits
        f.seek(hlen)
        while True:
            t, ln = struct.unpack('>II', f.read(8))
            if t == 0:
                return out
            d = f.read((ln + 7) // 8 * 8)
            if t == 0x23852875:
                n, _, dsize, doff = struct.unpack_from('>IIQQ', d, 0)
                break
        f.seek(doff)
        dirbuf = f.read(dsize)
        size = struct.unpack_from('>Q', h, 24)[0]
        p = 0
        for _ in range(n):
            toff, tsize, flags, typ, gbits, nlen, extra = struct.unpack_from(
                '>QIIBBHI', dirbuf, p)
            name = dirbuf[p + 24 + extra:p + 24 + extra + nlen].decode()
            p += (24 + extra + nlen + 7) // 8 * 8
            f.seek(toff)
            table = struct.unpack('>%dQ' % tsize, f.read(8 * tsize))
            bits = bytearray()
            for e in table:
                off = e & 0x00fffffffffffe00
                if off:
                    f.seek(off)
                    bits += f.read(cs)
                else:
                    bits += (b'\xff' if e & 1 else b'\0') * cs
            gran = 1 << gbits
            nbits = (size + gran - 1) // gran
            out['bitmaps'].append({'name': name, 'granularity': gran // 512,
                                   'dirty': dirty_of(bits, nbits)})
    return out


def add_feature(path, magic, flags, data):
    with open(path, 'r+b') as f:
        cb, nb, in_use, ext_off = header(f)
        f.seek(0, 2)
        end = (f.tell() + cb - 1) // cb * cb
        ext = bytearray(cb)
        struct.pack_into('<Q', ext, 0, EXT_MAGIC)
        struct.pack_into('<QQI', ext, 24, magic, flags, len(data))
        ext[48:48 + len(data)] = data
        ext[8:24] = hashlib.md5(bytes(ext[24:])).digest()
        f.seek(end)
        f.write(ext)
        f.seek(44)
        f.write(struct.pack('<I', CLOSED_V21))
        f.seek(56)
        f.write(struct.pack('<Q', end // 512))


if __name__ == '__main__':
    cmd = sys.argv[1]
    if cmd == 'show':
        print(json.dumps(show(sys.argv[2])))
    elif cmd == 'qcow2':
        print(json.dumps(qcow2(sys.argv[2])))
    elif cmd == 'granules':
        size, g = int(sys.argv[2]), set()
        for a in sys.argv[3:]:
            o, n = map(int, a.split(':'))
            g.update(range(o // size, (o + n - 1) // size + 1))
        print(sorted(g))
    elif cmd == 'add-feature':
        add_feature(sys.argv[2], int(sys.argv[3], 0), int(sys.argv[4], 0),
                    bytes.fromhex(sys.argv[5]))
    else:
        raise SystemExit(__doc__)
