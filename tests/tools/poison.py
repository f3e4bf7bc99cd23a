#!/usr/bin/env python3
"""Find BAT entries that point at clusters nobody wrote.

    poison.py fill IMAGE [BYTES]
        Fill IMAGE's free tail, from the end of its last allocated cluster
        (at least data_off) to the end of the file, or BYTES past that
        point, with a poison sector pattern.  The target appends new
        clusters there; every one it fills or writes loses its poison.
    poison.py check IMAGE
        Every cluster a BAT entry maps must hold no poison
        sector: a cluster still holding poison was made reachable before its
        fill and data writes were on disk.  Prints each such cluster and
        exits 1, or exits 0.

The poison is a 512-byte sector that starts with MAGIC; no data the tests
write (random bytes, byte patterns, ext4 blocks) looks like it.
"""
import os
import struct
import sys

MAGIC = b'PRL-POISON-SECTR'
SECTOR = MAGIC + b'\xe5' * (512 - len(MAGIC))


def header(img):
    """(cluster bytes, data_off bytes, BAT entry unit bytes, BAT entries)."""
    with open(img, 'rb') as f:
        hdr = f.read(64)
    tracks, bat_entries = struct.unpack_from('<II', hdr, 28)
    data_off = struct.unpack_from('<I', hdr, 48)[0]
    if not data_off:
        data_off = (64 + 4 * bat_entries + 511) // 512
    unit = 512 if hdr[:16] == b'WithoutFreeSpace' else tracks * 512
    return tracks * 512, data_off * 512, unit, bat_entries


def mapped(img):
    """(virtual offset, host offset, length) of every allocated cluster,
    from the BAT itself (qemu-img map costs a second under TCG)."""
    cluster, _, unit, n = header(img)
    with open(img, 'rb') as f:
        f.seek(64)
        bat = struct.unpack('<%dI' % n, f.read(4 * n))
    return [(i * cluster, e * unit, cluster) for i, e in enumerate(bat) if e]


def problems(img):
    """check-image.py's checks, from the BAT read here: every entry in the
    data area, on the cluster grid, inside the file, no two the same."""
    cluster, data_off, _, _ = header(img)
    fsize = os.path.getsize(img)
    bad, seen = [], {}
    for v, host, _ in mapped(img):
        vc = v // cluster
        if host < data_off:
            bad.append('cluster %d at %d is inside header/BAT' % (vc, host))
        elif (host - data_off) % cluster:
            bad.append('cluster %d at %d is off the cluster grid' % (vc, host))
        if host + cluster > fsize:
            bad.append('cluster %d at %d goes past the end of the file (%d)' % (vc, host, fsize))
        if host in seen:
            bad.append('clusters %d and %d share host cluster %d' % (seen[host], vc, host))
        seen.setdefault(host, vc)
    return bad


def fill(img, nbytes=None):
    _, start, _, _ = header(img)
    for _, host, length in mapped(img):
        start = max(start, host + length)
    end = os.path.getsize(img)
    if nbytes is not None:
        end = min(end, start + nbytes)
    chunk = SECTOR * 2048
    with open(img, 'r+b') as f:
        f.seek(start)
        pos = start
        while pos < end:
            n = min(len(chunk), end - pos)
            f.write(chunk[:n])
            pos += n
        f.flush()
        os.fsync(f.fileno())
    return start, end


def check(img):
    """Return a description of every mapped cluster holding poison."""
    cluster = header(img)[0]
    bad = []
    with open(img, 'rb') as f:
        for vstart, host, length in mapped(img):
            f.seek(host)
            for off in range(0, length, cluster):
                buf = f.read(min(cluster, length - off))
                i = buf.find(MAGIC)
                while i >= 0 and i % 512:
                    i = buf.find(MAGIC, i + 1)
                if i >= 0:
                    bad.append('cluster %d (host offset %d) holds never-written data at +%d'
                               % ((vstart + off) // cluster, host + off, i))
    return bad


if __name__ == '__main__':
    if sys.argv[1] == 'fill':
        s, e = fill(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None)
        print('# poisoned %s bytes %d..%d' % (sys.argv[2], s, e))
    else:
        found = check(sys.argv[2])
        for b in found[:20]:
            print('poison: %s: %s' % (sys.argv[2], b))
        if len(found) > 20:
            print('poison: %s: ... %d in all' % (sys.argv[2], len(found)))
        sys.exit(1 if found else 0)
