#!/usr/bin/env python3
"""Apply the same seeded random writes to a device and to a raw reference.

    randwrite.py [--zeroing [--lower FILE]] SEED COUNT CLUSTER_BYTES DEVICE REFERENCE

Writes are 512 B .. 4 MiB, sector aligned: inside one cluster, across
cluster boundaries, rewrites of earlier places, and at the very end of the
device (the last, maybe partial, cluster).  Each write has its own byte
pattern.  The device is opened with O_DIRECT so the target sees the bios
as issued; the reference is a plain file.  With --zeroing, a third of the
operations are discards (BLKDISCARD) or write-zeroes (BLKZEROOUT) instead.
The reference follows Documentation/dm-parallels.rst: write-zeroes reads
back zeros; a discard unmaps the whole clusters it covers that the image
owns, which then read as the lower device (FILE, else zeros), and leaves
everything else as it was.  The image owns a cluster once something was
written to it (a write-zeroes allocates only where the lower device has
data).  The image must start empty.
"""
import fcntl
import mmap
import os
import random
import struct
import sys

BLKDISCARD, BLKZEROOUT = 0x1277, 0x127f
args = sys.argv[1:]
zeroing = args[0] == '--zeroing'
lower_path = None
if zeroing:
    args = args[1:]
    if args[0] == '--lower':
        lower_path, args = args[1], args[2:]
seed, count, cluster = int(args[0]), int(args[1]), int(args[2])
dev_path, ref_path = args[3], args[4]
rnd = random.Random(seed)
lower = open(lower_path, 'rb').read() if lower_path else b''
owned = set()
cs = cluster // 512


def below(c):
    return c * cluster < len(lower)


def touch(start, n):
    return range(start // cs, (start + n - 1) // cs + 1)


dev = os.open(dev_path, os.O_WRONLY | os.O_DIRECT)
ref = os.open(ref_path, os.O_WRONLY)
size = os.lseek(dev, 0, os.SEEK_END)
sectors = size // 512
done = []

for i in range(count):
    kind = rnd.choice(['sub', 'cross', 'rewrite', 'tail', 'any'])
    if kind == 'sub':
        n = rnd.randint(1, max(1, min(cluster // 512, 8192) - 1))
        c = rnd.randrange(0, max(1, size // cluster))
        start = c * cluster // 512 + rnd.randrange(0, max(1, cluster // 512 - n + 1))
    elif kind == 'cross' and size > cluster:
        n = rnd.randint(2, 8192)
        b = rnd.randrange(1, max(2, size // cluster)) * cluster // 512
        start = b - rnd.randint(1, min(n - 1, b))
    elif kind == 'rewrite' and done:
        start, n = rnd.choice(done)
        n = max(1, n // rnd.randint(1, 3))
    elif kind == 'tail':
        n = rnd.randint(1, 64)
        start = sectors - n
    else:
        n = rnd.randint(1, 8192)
        start = rnd.randrange(0, sectors)
    start = max(0, min(start, sectors - 1))
    n = max(1, min(n, sectors - start, 8192))
    if zeroing and rnd.random() < 0.33:
        op = rnd.choice([BLKDISCARD, BLKZEROOUT])
        fcntl.ioctl(dev, op, struct.pack('QQ', start * 512, n * 512))
        if op == BLKZEROOUT:
            os.pwrite(ref, bytes(n * 512), start * 512)
            owned.update(c for c in touch(start, n) if c in owned or below(c))
        else:
            for c in touch(start, n):
                if c in owned and c * cs >= start and (c + 1) * cs <= start + n:
                    owned.discard(c)
                    back = lower[c * cluster:(c + 1) * cluster]
                    os.pwrite(ref, back + bytes(cluster - len(back)), c * cluster)
        done.append((start, n))
        continue
    owned.update(touch(start, n))
    buf = mmap.mmap(-1, n * 512)          # page aligned, as O_DIRECT wants
    pat = bytes([(i * 37 + 11) & 0xff, (seed + i) & 0xff]) * 256
    for off in range(0, n * 512, 512):
        buf[off:off + 512] = pat
    os.pwrite(dev, buf, start * 512)
    os.pwrite(ref, buf, start * 512)
    done.append((start, n))

os.fsync(dev)
os.fsync(ref)
print('%d writes, %d sectors' % (count, sum(n for _, n in done)))
