#!/usr/bin/env python3
"""Crash-consistency check of a parallels table with dm-log-writes.

    crashtest.py workload DEV LOGDEV OPS SEED STEPS CLUSTER
        Seeded steps of random O_DIRECT writes to DEV, each ended by fsync
        (a flush) and a dm-log-writes mark "step-K" on LOGDEV.  The writes
        are saved to OPS (JSON).

    crashtest.py check LOG IMAGE LOWER OPS SECTORS
        Replay the dm-log-writes LOG onto a copy of IMAGE (the image before
        the workload) up to every FLUSH, FUA and mark entry, and at each
        point check the crashed image: structurally sound (qemu-img check
        after clearing in_use, as a repair would; leaks allowed; our own
        map check), and its content through a read-only parallels table
        (over LOWER, or "-") holds every write of every step whose fsync
        had returned, and for every other sector either its old value or a
        value a write of the next step put there.  First, from the log
        alone: the first write sets in_use and is durable before any other.

The log format is the one drivers/md/dm-log-writes.c documents: a super
block in sector 0, then entries, each a header sector followed by its data
sectors (none for flushes, discards and marks).
"""
import json
import mmap
import os
import random
import runpy
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import poison  # noqa: E402

FLUSH, FUA, DISCARD, MARK = 1, 2, 4, 8
TOOLS = os.path.dirname(os.path.abspath(__file__))


def pattern(step, i):
    return bytes([(step * 7 + i * 13 + 1) & 0xff, 0xa0 | (i & 0xf)]) * 256


def workload(dev_path, logdev, ops_path, seed, steps, cluster):
    rnd = random.Random(seed)
    fd = os.open(dev_path, os.O_WRONLY | os.O_DIRECT)
    sectors = os.lseek(fd, 0, os.SEEK_END) // 512
    ops = []
    for step in range(steps):
        writes = []
        for i in range(rnd.randint(1, 6)):
            n = rnd.choice([1, 8, 64, rnd.randint(1, 512), cluster // 512])
            start = rnd.randrange(0, sectors - n)
            buf = mmap.mmap(-1, n * 512)
            pat = pattern(step, i)
            for off in range(0, n * 512, 512):
                buf[off:off + 512] = pat
            os.pwrite(fd, buf, start * 512)
            writes.append([start, n, step, i])
        os.fsync(fd)
        subprocess.run(['dmsetup', 'message', logdev, '0', 'mark', 'step-%d' % step],
                       check=True)
        ops.append(writes)
    os.close(fd)
    json.dump(ops, open(ops_path, 'w'))


def entries(log_path):
    with open(log_path, 'rb') as f:
        magic, version, nr, secsize = struct.unpack('<QQQI', f.read(28))
        if magic != 0x6a736677736872 or version != 1:
            sys.exit('not a dm-log-writes log')
        pos = secsize
        for idx in range(nr):
            f.seek(pos)
            hdr = f.read(secsize)
            sector, nsec, flags, dlen = struct.unpack_from('<QQQQ', hdr)
            mark = hdr[32:32 + dlen].decode() if flags & MARK else None
            data_pos = pos + secsize
            has_data = not flags & (DISCARD | MARK) and nsec
            pos = data_pos + (nsec * secsize if has_data else 0)
            yield idx, sector * secsize // 512, nsec * secsize // 512, flags, mark, \
                data_pos if has_data else None


def structure(pt, label, poisoned=False, qemu_map=True):
    """The structural checks of a crash point image PT (a scratch copy: its
    in_use field is set to closed, as a repair would): our map check (with
    qemu_map, check-image.py on qemu-img map; always the same checks on the
    BAT as read here), no BAT entry at never-written (poisoned) data,
    qemu-img check (leaks allowed)."""
    if qemu_map:
        argv = sys.argv                    # check-image.py, without a new python
        try:
            sys.argv = ['check-image.py', pt]
            runpy.run_path(os.path.join(TOOLS, 'check-image.py'), run_name='__main__')
        except SystemExit as e:
            if e.code:
                sys.exit('%s: check-image.py failed' % label)
        finally:
            sys.argv = argv
    bad = poison.problems(pt)
    if bad:
        for b in bad[:3]:
            print('# %s: %s' % (label, b))
        sys.exit('%s: the BAT is not sound' % label)
    if poisoned:
        bad = poison.check(pt)
        if bad:
            for b in bad[:3]:
                print('# %s: %s' % (label, b))
            sys.exit('%s: %d BAT entries point at never-written clusters' % (label, len(bad)))
    with open(pt, 'r+b') as f:            # what a repair of in_use does
        f.seek(44)
        f.write(struct.pack('<I', 0x312e3276))
    rc = subprocess.run(['qemu-img', 'check', '-q', '-f', 'parallels', pt],
                        capture_output=True).returncode
    if rc not in (0, 3):
        sys.exit('%s: qemu-img check exit %d' % (label, rc))


def scratch_dir():
    """Where the crash point images go: tmpfs when there is one, so that the
    copies and the flushes of the tables over them cost no disk I/O."""
    return tempfile.mkdtemp(prefix='crash.', dir='/dev/shm' if os.path.isdir('/dev/shm') else '.')


def check_point(img, lower, ops, sectors, done, label, poisoned):
    """done: number of steps whose fsync returned before this point."""
    pt = os.path.join(os.path.dirname(img), 'point.hds')
    subprocess.run(['cp', '--sparse=always', img, pt], check=True)

    loop = subprocess.run(['losetup', '-r', '-f', '--show', pt], check=True,
                          capture_output=True, text=True).stdout.strip()
    lower_dev = '-'
    lloop = None
    if lower != '-':
        lloop = lower_dev = subprocess.run(['losetup', '-r', '-f', '--show', lower], check=True,
                                           capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run(['dmsetup', 'create', '--readonly', 'crashpt', '--table',
                        '0 %d parallels %s %s' % (sectors, loop, lower_dev)], check=True)
        data = open('/dev/mapper/crashpt', 'rb').read()
    finally:
        subprocess.run(['dmsetup', 'remove', 'crashpt'])
        subprocess.run(['losetup', '-d', loop])
        if lloop:
            subprocess.run(['losetup', '-d', lloop])
    structure(pt, label, poisoned)

    # Expected: the lower device (or zeros), then every completed step.
    want = bytearray(sectors * 512)
    if lower != '-':
        base = open(lower, 'rb').read()[:sectors * 512]
        want[:len(base)] = base
    for step in ops[:done]:
        for start, n, s, i in step:
            want[start * 512:(start + n) * 512] = pattern(s, i) * n
    nxt = {}
    if done < len(ops):
        for start, n, s, i in ops[done]:
            for sec in range(start, start + n):
                nxt.setdefault(sec, set()).add(pattern(s, i))
    bad = 0
    for sec in range(sectors):
        got = data[sec * 512:(sec + 1) * 512]
        if got != want[sec * 512:(sec + 1) * 512] and got not in nxt.get(sec, ()):
            bad += 1
            if bad <= 3:
                print('# %s: sector %d holds neither its flushed nor a newer value' % (label, sec))
    if bad:
        sys.exit('%s: %d sectors wrong' % (label, bad))


def sparse_copy(src, dst):
    """Copy SRC over DST in place (the same inode: a loop device may be
    attached to it), holes as holes, without a new process."""
    size = os.path.getsize(src)
    with open(src, 'rb') as f, open(dst, 'r+b' if os.path.exists(dst) else 'wb') as g:
        g.truncate(0)
        fd, off = f.fileno(), 0
        while off < size:
            try:
                off = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, off, os.SEEK_HOLE)
            f.seek(off)
            g.seek(off)
            while off < end:
                buf = f.read(min(end - off, 4 << 20))
                g.write(buf)
                off += len(buf)
        g.truncate(size)


def in_use_first(log_path):
    """The in-use protocol, from the log: the first write sets in_use in
    the header, and it is durable (FUA, or a flush before the next write)
    before any other write reaches the image."""
    first = None
    with open(log_path, 'rb') as log:
        for idx, sector, nsec, flags, mark, data_pos in entries(log_path):
            if data_pos is None:
                if first is not None and flags & FLUSH:
                    return
                continue
            if first is None:
                log.seek(data_pos + 44)
                in_use = struct.unpack('<I', log.read(4))[0]
                if sector != 0 or in_use != 0x746f6e59:
                    sys.exit('entry %d: the first write is sector %d, not the header '
                             'setting in_use' % (idx, sector))
                if flags & FUA:
                    return
                first = idx
            elif flags & FLUSH:
                return          # its preflush comes before the write
            else:
                sys.exit('entry %d: written before the in_use header (entry %d) '
                         'was durable' % (idx, first))
    if first is None:
        sys.exit('the log holds no write')


def replay(log_path, image, work):
    """Copy IMAGE to WORK and apply LOG to it entry by entry; at every FLUSH,
    FUA and mark entry (WORK then holds what a crash there leaves) yield
    (index, flags, mark).  Checks in_use_first first."""
    in_use_first(log_path)
    subprocess.run(['cp', '--sparse=always', image, work], check=True)
    with open(log_path, 'rb') as log, open(work, 'r+b') as w:
        for idx, sector, nsec, flags, mark, data_pos in entries(log_path):
            if data_pos is not None:
                log.seek(data_pos)
                w.seek(sector * 512)
                w.write(log.read(nsec * 512))
            elif flags & DISCARD:
                w.seek(sector * 512)
                w.write(bytes(nsec * 512))
            if flags & (FLUSH | FUA | MARK):
                w.flush()
                yield idx, flags, mark


def point_name(idx, flags, mark):
    return 'entry %d (%s)' % (idx, mark or ('flush' if flags & FLUSH else 'fua'))


def check(log_path, image, lower, ops_path, sectors, poisoned=False):
    ops = json.load(open(ops_path))
    done = points = 0
    tmp = scratch_dir()
    try:
        work = os.path.join(tmp, 'work.hds')
        for idx, flags, mark in replay(log_path, image, work):
            if mark and mark.startswith('step-'):
                done = int(mark[5:]) + 1
            check_point(work, lower, ops, sectors, done, point_name(idx, flags, mark),
                        poisoned)
            points += 1
    finally:
        shutil.rmtree(tmp)
    if done != len(ops):
        sys.exit('only %d of %d step marks found in the log' % (done, len(ops)))
    print('# %d crash points checked, %d steps' % (points, done))


if __name__ == '__main__':
    if sys.argv[1] == 'workload':
        workload(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]),
                 int(sys.argv[7]))
    else:
        check(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]),
              sys.argv[7:8] == ['poisoned'])
