#!/usr/bin/env python3
"""Patch fields of a Parallels image in place, to make corrupted images.

    patch-image.py IMAGE FIELD=VALUE...

FIELD is a header field (magic version tracks bat_entries nb_sectors in_use
data_off flags ext_off) or bat[N]; VALUE is a number (0x.. allowed) or, for
magic, a string.  `truncate=BYTES` cuts the file.
"""
import struct
import sys

FIELDS = {'version': (16, '<I'), 'tracks': (28, '<I'), 'bat_entries': (32, '<I'),
          'nb_sectors': (36, '<Q'), 'in_use': (44, '<I'), 'data_off': (48, '<I'),
          'flags': (52, '<I'), 'ext_off': (56, '<Q')}


def patch(img, args):
    with open(img, 'r+b') as f:
        for arg in args:
            k, v = arg.split('=', 1)
            if k == 'magic':
                f.seek(0)
                f.write(v.encode()[:16].ljust(16, b'\0'))
            elif k == 'truncate':
                f.truncate(int(v, 0))
            elif k.startswith('bat['):
                f.seek(64 + 4 * int(k[4:-1]))
                f.write(struct.pack('<I', int(v, 0)))
            else:
                off, fmt = FIELDS[k]
                f.seek(off)
                f.write(struct.pack(fmt, int(v, 0)))


if __name__ == '__main__':
    patch(sys.argv[1], sys.argv[2:])
