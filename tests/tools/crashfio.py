#!/usr/bin/env python3
"""Crash consistency under a raw fio workload with fsync, by replay.

    crashfio.py workload DEV LOGDEV
        Run ROUNDS on DEV, one fio per round: random writes over the
        round's region, each block once, with fio's crc32c verify headers,
        an fsync every 8 writes and at the end; then a mark "round-K" on
        the dm-log-writes device LOGDEV.  Rounds rewrite earlier regions
        (allocated clusters) and reach new ones (allocating, partial fill).
    crashfio.py check LOG IMAGE SECTORS [MAX]
        Replay LOG onto a copy of IMAGE (poisoned by poison.py) up to
        every FLUSH/FUA and mark entry (with MAX: every mark and about MAX
        of the others) and check each point: the image is sound
        (crashtest.structure: map, poison, qemu-img check) and, through a
        table over a throwaway copy, fio --verify_only passes for the
        latest completed round of every region the next round does not
        touch: every write whose fsync returned before the point reads
        back, checksummed, at its offset.
"""
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashtest  # noqa: E402

MIB = 1 << 20
# (region offset, size, block size): region 0 and 1 are written twice.
ROUNDS = [(0, 4 * MIB, '4k'), (6 * MIB, 4 * MIB, '16k'), (0, 4 * MIB, '64k'),
          (12 * MIB, 3 * MIB, '4k'), (6 * MIB, 4 * MIB, '4k')]


def job(path, k, verify):
    off, size, bs = ROUNDS[k]
    return '\n'.join([
        '[round-%d]' % k, 'filename=%s' % path, 'rw=randwrite', 'bs=%s' % bs,
        'offset=%d' % off, 'size=%d' % size, 'randseed=%d' % (k + 1),
        'ioengine=psync', 'direct=1', 'verify=crc32c', 'fsync=8', 'end_fsync=1',
        'do_verify=%d' % verify] + (['verify_only=1', 'stonewall'] if verify else [])) + '\n'


def fio(jobs, what):
    with open('crashfio.fio', 'w') as f:
        f.write(''.join(jobs))
    r = subprocess.run(['fio', '--output-format=terse', 'crashfio.fio'],
                       capture_output=True, text=True)
    if r.returncode:
        return '%s: fio exit %d: %s' % (what, r.returncode,
                                        (r.stderr.strip().splitlines() or [''])[0])
    return None


def workload(dev, logdev):
    for k in range(len(ROUNDS)):
        err = fio([job(dev, k, False)], 'round %d' % k)
        if err:
            sys.exit(err)
        subprocess.run(['dmsetup', 'message', logdev, '0', 'mark', 'round-%d' % k],
                       check=True)
    print('# %d fio rounds written' % len(ROUNDS))


def to_verify(done):
    """Rounds to verify after DONE completed rounds: the latest of each
    region, but not a region round DONE (in flight) writes."""
    latest = {}
    for k in range(done):
        latest[ROUNDS[k][0]] = k
    if done < len(ROUNDS):
        latest.pop(ROUNDS[done][0], None)
    return sorted(latest.values())


def check(log_path, image, sectors, max_points=0):
    plain = sum(1 for _, _, _, flags, mark, _ in crashtest.entries(log_path)
                if flags & (crashtest.FLUSH | crashtest.FUA) and not mark)
    every = max(1, -(-plain // max_points)) if max_points else 1
    tmp = crashtest.scratch_dir()
    work, pt = os.path.join(tmp, 'work.hds'), os.path.join(tmp, 'point.hds')
    done = checked = seen = verified = 0
    loop = None
    try:
        crashtest.sparse_copy(image, pt)
        loop = subprocess.run(['losetup', '-f', '--show', pt], check=True,
                              capture_output=True, text=True).stdout.strip()
        for idx, flags, mark in crashtest.replay(log_path, image, work):
            if mark and mark.startswith('round-'):
                done = int(mark[6:]) + 1
            if not mark:
                seen += 1
                if (seen - 1) % every:
                    continue
            label = crashtest.point_name(idx, flags, mark)
            crashtest.sparse_copy(work, pt)
            crashtest.structure(pt, label, poisoned=True, qemu_map=bool(mark))
            checked += 1
            rounds = to_verify(done)
            if not rounds:
                continue
            # Read-write (in_use may be set: a crash), but fio only reads.
            subprocess.run(['dmsetup', 'create', 'crashfio', '--table',
                            '0 %d parallels %s - 1 ignore_in_use' % (sectors, loop)],
                           check=True)
            try:
                err = fio([job('/dev/mapper/crashfio', k, True) for k in rounds], label)
            finally:
                subprocess.run(['dmsetup', 'remove', '--retry', 'crashfio'], check=True)
            if err:
                sys.exit('%s, %d rounds done: %s' % (label, done, err))
            verified += len(rounds)
    finally:
        if loop:
            subprocess.run(['losetup', '-d', loop])
        shutil.rmtree(tmp)
    if done != len(ROUNDS):
        sys.exit('only %d of %d round marks found in the log' % (done, len(ROUNDS)))
    print('# %d of %d crash points checked (every %d flush/fua + all marks), '
          '%d round verifications' % (checked, plain + len(ROUNDS), every, verified))


if __name__ == '__main__':
    if sys.argv[1] == 'workload':
        workload(sys.argv[2], sys.argv[3])
    else:
        check(sys.argv[2], sys.argv[3], int(sys.argv[4]),
              int(sys.argv[5]) if len(sys.argv) > 5 else 0)
