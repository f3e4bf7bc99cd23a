#!/usr/bin/env python3
"""Bad images and table lines against the kernel target, in one process.

    refuse.py images SPECS
        SPECS: one tab-separated line per case, NAME BASE MESSAGE PATCH...
        (PATCH as patch-image.py takes it).  NAME.hds is BASE patched; a
        read-only table over it must be refused with "parallels: MESSAGE"
        in the kernel log, leave no device behind and not change a byte of
        the image.
    refuse.py tables SPECS
        SPECS: MESSAGE<TAB>TABLE lines; each table must be refused so.
    refuse.py random BASE N
        N copies of BASE with 1-4 random bytes of header and BAT changed:
        each is refused cleanly or, if accepted, reads in full.
The first two print the number of cases checked.  Loop devices are set up
with ioctls, not losetup: under TCG each process start costs ~0.2-1 s.
"""
import fcntl
import hashlib
import importlib.util
import os
import random
import struct
import subprocess
import sys

_spec = importlib.util.spec_from_file_location(
    'patch_image', os.path.join(os.path.dirname(os.path.abspath(__file__)), 'patch-image.py'))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
patch = _mod.patch

LOOP_SET_FD, LOOP_CLR_FD, LOOP_CTL_GET_FREE = 0x4C00, 0x4C01, 0x4C82


class Loop:
    """A read-only loop device over PATH, detached when done."""

    def __init__(self, path):
        ctl = os.open('/dev/loop-control', os.O_RDWR)
        try:
            self.nr = fcntl.ioctl(ctl, LOOP_CTL_GET_FREE)
        finally:
            os.close(ctl)
        self.dev = '/dev/loop%d' % self.nr
        self.fd = os.open(self.dev, os.O_RDONLY)
        back = os.open(path, os.O_RDONLY)   # read-only file: read-only loop
        try:
            fcntl.ioctl(self.fd, LOOP_SET_FD, back)
        finally:
            os.close(back)

    def close(self):
        fcntl.ioctl(self.fd, LOOP_CLR_FD)
        os.close(self.fd)


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True)


def kmark(name):
    with open('/dev/kmsg', 'w') as k:
        k.write('refuse-mark %s\n' % name)


def sha(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def try_create(name, table):
    """dmsetup create --readonly NAME; True if it was accepted (then removed)."""
    if run('dmsetup', 'create', '--readonly', name, '--table', table).returncode:
        return False
    run('dmsetup', 'remove', name)
    return True


def messages():
    """The kernel log, split at our marks: {mark name: lines after it}."""
    out, cur = {}, None
    for line in run('dmesg', '-t').stdout.splitlines():
        if line.startswith('refuse-mark '):
            cur = line[len('refuse-mark '):]
            out[cur] = []
        elif cur is not None:
            out[cur].append(line)
    return out


def expect_logged(cases):
    log = messages()
    for name, msg in cases:
        if not any('parallels: ' + msg in line for line in log.get(name, [])):
            sys.exit('# FAIL: %s: no "%s" in the kernel log: %s'
                     % (name, msg, log.get(name, [])[-3:]))


def left_behind(prefix):
    names = [ln.split()[0] for ln in run('dmsetup', 'ls').stdout.splitlines() if ln.split()]
    return [n for n in names if n.startswith(prefix)]


def images(spec_path):
    cases = []
    for line in open(spec_path):
        f = line.rstrip('\n').rstrip('\t').split('\t')
        name, base, msg, patches = f[0], f[1], f[2], f[3:]
        img = name + '.hds'
        with open(base, 'rb') as src, open(img, 'wb') as dst:
            dst.write(src.read())
        patch(img, patches)
        before = sha(img)
        loop = Loop(img)
        try:
            kmark(name)
            if try_create('c-' + name, '0 8192 parallels %s -' % loop.dev):
                sys.exit('# FAIL: %s: accepted' % name)
        finally:
            loop.close()
        if sha(img) != before:
            sys.exit('# FAIL: %s: image written' % name)
        cases.append((name, msg))
        print('# %s: refused: %s' % (name, msg), file=sys.stderr)
    expect_logged(cases)
    if left_behind('c-'):
        sys.exit('# FAIL: devices left behind: %s' % left_behind('c-'))
    print(len(cases))


def tables(spec_path):
    cases = []
    for i, line in enumerate(open(spec_path)):
        msg, table = line.rstrip('\n').split('\t')
        kmark('table-%d' % i)
        if try_create('c-table', table):
            sys.exit("# FAIL: table '%s' accepted" % table)
        cases.append(('table-%d' % i, msg))
    expect_logged(cases)
    if left_behind('c-'):
        sys.exit('# FAIL: devices left behind: %s' % left_behind('c-'))
    print(len(cases))


def damaged(base_path, count):
    rnd = random.Random(42)
    base = open(base_path, 'rb').read()
    acc = 0
    for i in range(count):
        b = bytearray(base)
        for _ in range(rnd.randint(1, 4)):
            b[rnd.randrange(0, 64 + 4 * 128)] = rnd.randrange(256)
        open('fz.hds', 'wb').write(b)
        loop = Loop('fz.hds')
        try:
            size = min(struct.unpack_from('<Q', b, 36)[0], 1 << 16)
            if size and run('dmsetup', 'create', '--readonly', 'fz', '--table',
                            '0 %d parallels %s -' % (size, loop.dev)).returncode == 0:
                acc += 1
                try:
                    with open('/dev/mapper/fz', 'rb', buffering=0) as f:
                        while f.read(1 << 20):
                            pass
                except OSError as e:
                    sys.exit('# FAIL: image %d accepted but reading failed: %s' % (i, e))
                finally:
                    if run('dmsetup', 'remove', 'fz').returncode:
                        sys.exit('# FAIL: image %d: cannot remove its table' % i)
        finally:
            loop.close()
    print('# random damage: %d of %d accepted and read in full' % (acc, count))


if __name__ == '__main__':
    if sys.argv[1] == 'images':
        images(sys.argv[2])
    elif sys.argv[1] == 'tables':
        tables(sys.argv[2])
    else:
        damaged(sys.argv[2], int(sys.argv[3]))
