#!/usr/bin/env python3
"""Crash consistency of ext4 on a parallels table, with dm-log-writes.

    crashfs.py workload MNT LOGDEV STATE SEED STEPS
        An fsync-heavy workload in the mounted file system MNT: each step
        creates, writes and fsyncs small files, now and then a bigger one,
        replaces a file atomically (write tmp, fsync, rename over it),
        unlinks, renames across directories, appends to a log, overwrites a
        4 KiB block in place, fsyncs the directories, then puts a mark
        "step-K" on LOGDEV.  STATE (JSON) gets, per step, the whole tree as
        it was at the mark (path -> size, sha256; all of it durable then)
        and what the step touched.

    crashfs.py check LOG IMAGE LOWER STATE SECTORS [MAX]
        Replay LOG onto a copy of IMAGE (the image before mkfs) to every
        FLUSH, FUA and mark entry (with MAX, every mark and about MAX of the
        others, evenly spread) and check each crash point:
          - the image: crashtest.structure() (map check, no BAT entry at
            poisoned = never-written clusters, qemu-img check, leaks allowed);
          - once the log's "mkfs" mark is passed, the file system, on a
            throwaway copy through a read-write parallels table (over
            LOWER, or "-"): mount it (which recovers the journal, as
            xfstests' generic/482 does), check the files, unmount, then
            e2fsck -fn must find nothing;
          - the files, against the last step mark K before the point: every
            file of step K's tree that step K+1 does not touch is there with
            its content; a file step K+1 touches holds its old or its new
            content, or is gone if K+1 renames or unlinks it (an append
            keeps the old content as a prefix; an in-place block overwrite
            gives old or new); no other file exists.
"""
import ctypes
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashtest  # noqa: E402


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path, data, chunk=None):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        chunk = chunk or len(data) or 1
        for off in range(0, len(data), chunk):
            os.write(fd, data[off:off + chunk])
        os.fsync(fd)
    finally:
        os.close(fd)


def digest(data):
    return [len(data), hashlib.sha256(data).hexdigest()]


def workload(mnt, logdev, state_path, seed, steps):
    rnd = random.Random(seed)
    files = {}                      # relative path -> content
    dirs = ['d0', 'd1', 'd2']
    for d in dirs:
        os.mkdir(os.path.join(mnt, d))
    fsync_path(mnt)
    state = []
    for k in range(steps):
        touched, appended, overwritten, renamed = set(), {}, set(), {}

        def p(rel):
            return os.path.join(mnt, rel)
        old = [f for f in sorted(files) if f not in ('cfg', 'log')]
        rnd.shuffle(old)
        # Small files, each fsync'd.
        d = dirs[k % len(dirs)]
        for i in range(rnd.randint(4, 8)):
            rel = '%s/s%d-%d' % (d, k, i)
            data = rnd.randbytes(rnd.choice([1, 100, 4096, 5000, rnd.randint(1, 40000)]))
            write_file(p(rel), data)
            files[rel] = data
            touched.add(rel)
        # Now and then a bigger one, written in pieces.
        if k % 2 == 0:
            rel = 'big%d' % k
            data = rnd.randbytes(rnd.randint(256 << 10, 1536 << 10))
            write_file(p(rel), data, 64 << 10)
            files[rel] = data
            touched.add(rel)
        # Atomic replace.
        data = rnd.randbytes(rnd.randint(1, 9000))
        write_file(p('cfg.tmp'), data)
        os.rename(p('cfg.tmp'), p('cfg'))
        fsync_path(mnt)
        files['cfg'] = data
        touched.update(['cfg', 'cfg.tmp'])
        # Unlink and rename files of earlier steps.
        for rel in old[:rnd.randint(0, 2)]:
            os.unlink(p(rel))
            fsync_path(os.path.dirname(p(rel)))
            del files[rel]
            touched.add(rel)
        for rel in old[2:2 + rnd.randint(0, 2)]:
            to = '%s/r%d-%s' % (rnd.choice(dirs), k, os.path.basename(rel))
            os.rename(p(rel), p(to))
            fsync_path(os.path.dirname(p(rel)))
            fsync_path(os.path.dirname(p(to)))
            files[to] = files.pop(rel)
            touched.update([rel, to])
            renamed[to] = rel
        # Overwrite one 4 KiB block of an earlier file in place.
        for rel in old[4:]:
            if len(files[rel]) >= 8192:
                blk = rnd.randrange(len(files[rel]) // 4096)
                new = rnd.randbytes(4096)
                fd = os.open(p(rel), os.O_WRONLY)
                os.pwrite(fd, new, blk * 4096)
                os.fsync(fd)
                os.close(fd)
                b = bytearray(files[rel])
                b[blk * 4096:(blk + 1) * 4096] = new
                files[rel] = bytes(b)
                touched.add(rel)
                overwritten.add(rel)
                break
        # Append to the log.
        data = rnd.randbytes(rnd.randint(100, 6000))
        if 'log' in files:
            appended['log'] = len(files['log'])
        fd = os.open(p('log'), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        files['log'] = files.get('log', b'') + data
        touched.add('log')
        # Everything of this step is durable now.
        for d2 in dirs:
            fsync_path(p(d2))
        fsync_path(mnt)
        if logdev != '-':
            subprocess.run(['dmsetup', 'message', logdev, '0', 'mark', 'step-%d' % k],
                           check=True)
        state.append({'tree': {f: digest(c) for f, c in files.items()},
                      'touched': sorted(touched), 'appended': appended, 'renamed': renamed,
                      'overwritten': sorted(overwritten)})
    json.dump(state, open(state_path, 'w'))
    print('# %d steps, %d files, %d bytes' % (steps, len(files),
                                              sum(len(c) for c in files.values())))


def read_tree(mnt):
    tree = {}
    for top, dirnames, names in os.walk(mnt):
        if top == mnt and 'lost+found' in dirnames:
            dirnames.remove('lost+found')
        for n in names:
            full = os.path.join(top, n)
            with open(full, 'rb') as f:
                tree[os.path.relpath(full, mnt)] = f.read()
    return tree


def check_files(mnt, state, done):
    """Problems of the mounted tree, done steps having completed."""
    base = state[done - 1]['tree'] if done else {}
    nxt = state[done] if done < len(state) else {'tree': {}, 'touched': [],
                                                 'appended': {}, 'overwritten': [], 'renamed': {}}
    touched = set(nxt['touched'])
    got = read_tree(mnt)
    bad = []
    for f, (size, sha) in base.items():
        if f in touched:
            continue
        if f not in got:
            bad.append('%s: missing (durable since step %d)' % (f, done - 1))
        elif digest(got[f]) != [size, sha]:
            bad.append('%s: %d bytes, content differs from the durable %d bytes'
                       % (f, len(got[f]), size))
    for f in touched:
        if f not in got:
            if f in nxt['overwritten'] or f in nxt['appended']:
                bad.append('%s: missing while step %d modified it in place' % (f, done))
            continue
        data = got[f]
        if f in nxt['appended']:
            n = nxt['appended'][f]
            if len(data) < n or digest(data[:n]) != base[f]:
                bad.append('%s: the durable first %d bytes changed by an append' % (f, n))
        elif f in nxt['renamed']:
            if digest(data) != base[nxt['renamed'][f]]:
                bad.append('%s: renamed from %s, but not its content' % (f, nxt['renamed'][f]))
        elif f in base:
            if digest(data) not in (base[f], nxt['tree'].get(f)):
                bad.append('%s: neither its old nor its new content' % f)
    for f in got:
        if f not in base and f not in touched:
            bad.append('%s: exists, but was never created or was removed earlier' % f)
    return bad


CMD_TIME = {}


def run(cmd, **kw):
    t = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    CMD_TIME[cmd[0]] = CMD_TIME.get(cmd[0], 0) + time.monotonic() - t
    return r


LIBC = ctypes.CDLL(None, use_errno=True)


def mount(dev, mnt):
    """mount(2) without a process: ext4, read-write (journal recovery)."""
    if LIBC.mount(dev.encode(), mnt.encode(), b'ext4', 0, None):
        return os.strerror(ctypes.get_errno())
    return None


def umount(mnt):
    if LIBC.umount2(mnt.encode(), 0):
        return os.strerror(ctypes.get_errno())
    return None


def check_fs(loop, lower_dev, sectors, state, done):
    """Through a rw table on LOOP (the throwaway copy): mount (journal
    recovery), check the files, umount, e2fsck -fn."""
    r = run(['dmsetup', 'create', 'crashfs', '--table',
             '0 %d parallels %s %s' % (sectors, loop, lower_dev)])
    if r.returncode:
        return ['cannot activate read-write: ' + r.stderr.strip()]
    bad = []
    dev = '/dev/mapper/crashfs'
    try:
        os.makedirs('crashmnt', exist_ok=True)
        err = mount(dev, 'crashmnt')
        if err:
            return ['mount (journal recovery) failed: %s; kernel: %s' % (
                err, run(['dmesg']).stdout.strip().splitlines()[-3:])]
        try:
            bad = check_files('crashmnt', state, done)
        finally:
            err = umount('crashmnt')
            if err:
                bad.append('umount failed: ' + err)
        r = run(['e2fsck', '-fn', dev])
        if r.returncode:
            bad.append('e2fsck -fn exit %d after recovery:\n%s' % (
                r.returncode, '\n'.join(r.stdout.strip().splitlines()[:15])))
        return bad
    finally:
        if run(['dmsetup', 'remove', '--retry', 'crashfs']).returncode:
            bad.append('cannot remove the table')


def check_points(log_path, image, lower, state, sectors, every, work, pt, spent):
    fs = False
    done = checked = seen = failed = 0
    t = time.monotonic()
    loop = lloop = None

    def lap(what):
        nonlocal t
        now = time.monotonic()
        spent[what] = spent.get(what, 0) + now - t
        t = now
    try:
        # One loop device over the throwaway copy, which is rewritten in place.
        crashtest.sparse_copy(image, pt)
        loop = run(['losetup', '-f', '--show', pt], check=True).stdout.strip()
        lower_dev = '-'
        if lower != '-':
            lloop = lower_dev = run(['losetup', '-r', '-f', '--show', lower],
                                    check=True).stdout.strip()
        for idx, flags, mark in crashtest.replay(log_path, image, work):
            lap('replay')
            if mark == 'mkfs':
                fs = True
            elif mark and mark.startswith('step-'):
                done = int(mark[5:]) + 1
            if not mark:
                seen += 1
                if (seen - 1) % every:
                    continue
            label = crashtest.point_name(idx, flags, mark)
            crashtest.sparse_copy(work, pt)
            lap('copy')
            crashtest.structure(pt, label, poisoned=True, qemu_map=bool(mark))
            lap('image')
            checked += 1
            if not fs:
                continue
            bad = check_fs(loop, lower_dev, sectors, state, done)
            lap('fs')
            if bad:
                failed += 1
                print('# %s, %d steps done: FAILED' % (label, done))
                for b in bad[:8]:
                    print('#   ' + b.replace('\n', '\n#     '))
                if failed >= 5:
                    break
    finally:
        for d in (loop, lloop):
            if d:
                run(['losetup', '-d', d])
    return failed, checked, done


def check(log_path, image, lower, state_path, sectors, max_points=0):
    state = json.load(open(state_path))
    # Which points: every mark, and the others evenly spread if MAX is given.
    plain = sum(1 for _, _, _, flags, mark, _ in crashtest.entries(log_path)
                if flags & (crashtest.FLUSH | crashtest.FUA) and not mark)
    every = max(1, -(-plain // max_points)) if max_points else 1
    spent = {}
    tmp = crashtest.scratch_dir()
    try:
        failed, checked, done = check_points(log_path, image, lower, state, sectors, every,
                                             os.path.join(tmp, 'work.hds'),
                                             os.path.join(tmp, 'point.hds'), spent)
    finally:
        shutil.rmtree(tmp)
    print('# seconds spent: ' + ', '.join('%s %.0f' % kv for kv in spent.items()) +
          ' (' + ', '.join('%s %.0f' % kv for kv in sorted(CMD_TIME.items())) + ')')
    if failed:
        sys.exit('%d of %d crash points checked failed' % (failed, checked))
    if done != len(state):
        sys.exit('only %d of %d step marks found in the log' % (done, len(state)))
    print('# %d of %d crash points checked (every %d flush/fua + all marks), %d steps'
          % (checked, plain + len(state) + 1, every, done))


if __name__ == '__main__':
    if sys.argv[1] == 'workload':
        workload(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
    else:
        check(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]),
              int(sys.argv[7]) if len(sys.argv) > 7 else 0)
