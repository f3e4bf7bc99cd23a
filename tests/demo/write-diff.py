#!/usr/bin/env python3
"""Print qemu-io commands that turn image A into image B.

Compares two raw files in 64 KiB chunks and, for each chunk that differs,
writes a pattern file holding B's bytes and prints `write -s FILE OFF LEN`.
"""
import os
import sys

CHUNK = 64 * 1024
a_path, b_path = sys.argv[1], sys.argv[2]
outdir = os.path.dirname(os.path.abspath(b_path))
with open(a_path, 'rb') as a, open(b_path, 'rb') as b:
    off = 0
    while True:
        x, y = a.read(CHUNK), b.read(CHUNK)
        if not y:
            break
        if x != y:
            name = os.path.join(outdir, 'chunk-%d' % off)
            with open(name, 'wb') as f:
                f.write(y)
            print('write -s %s %d %d' % (name, off, len(y)))
        off += len(y)
