#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Flush and FUA are durability promises, kept whatever the device below.
#
# writethrough: on an image device with no volatile write cache (a loop
# device set to "write through", a brd ram disk; a PLP NVMe or a BBU RAID
# in real life), and a commit interval of ten minutes, the BAT entry of a
# new cluster is in the image as soon as `dd conv=fsync` (a PREFLUSH) or
# `dd oflag=dsync` (FUA) returns, and the parallels device advertises a
# write-back cache so that the block layer passes flushes down to it at all.
#
# deferred: a flush that arrives while a commit is in progress must still
# be followed by a flush of the image device sent after every write it
# covers completed.  The stack is parallels -> dm-log-writes -> dm-delay
# (flushes held 4 s) -> loop, so the log records each flush when it was
# submitted and the window is seconds wide: a new cluster A is written, the
# periodic commit (200 ms) starts, and while its second flush is held an
# allocated cluster B is overwritten with dd conv=fsync.  B's write completes
# at once; the fsync's flush is deferred behind the commit, which covered
# the BAT but not B.  The log must show a FLUSH after B's write and before
# the mark set when the fsync returned.  And a suspend sent while that
# flush waits in the target completes (the flush is sent to the image
# device, not back into the suspended dm device).
# vm-timeout: 300
set -eEu
. "$SRC/tests/vm/lib.sh"

tools=$SRC/tests/tools

# bat_entry DEV N: BAT entry N as the image device holds it (O_DIRECT: what
# is in the file, not in a cache).
bat_entry() {
	dd if="$1" bs=4096 count=1 iflag=direct status=none |
		od -An -tu4 -j$((64 + 4 * $2)) -N4 | tr -d ' '
}
blkdev() { dmsetup info -c --noheadings -o blkdevname "$1"; }
status_field() { dmsetup status "$1" | awk -v f="$2" '{ print $f }'; }

# qemu_ok IMAGE: qemu-img check passes (leaks allowed).
qemu_ok() {
	local rc=0
	qemu-img check -q -f parallels "$1" || rc=$?
	[ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "$1: qemu-img check exit $rc"
}

# writethrough NAME DEV: a parallels table NAME over DEV, an image device
# with no volatile write cache holding a fresh image; durable fsync and FUA.
# Sets wt_end to the image end.
writethrough() {
	local dev=$2
	dm_create "$1" "0 32768 parallels $dev - 1 commit_interval_ms:600000"
	note "$dev: write_cache '$(cat /sys/block/"${dev#/dev/}"/queue/write_cache)'; parallels device $(blkdev "$1"): '$(cat /sys/block/"$(blkdev "$1")"/queue/write_cache)'"

	# Control: the commit message puts an entry in the image, and
	# bat_entry sees it there.
	dd if=/dev/urandom of=/dev/mapper/"$1" bs=64k count=1 seek=5 oflag=direct status=none
	dmsetup message "$1" 0 commit
	[ "$(bat_entry "$dev" 5)" != 0 ] || fail "control: BAT entry 5 still 0 after the commit message"

	head -c 65536 /dev/urandom > c0.bin
	dd if=c0.bin of=/dev/mapper/"$1" bs=64k count=1 oflag=direct conv=fsync status=none
	[ "$(bat_entry "$dev" 0)" != 0 ] ||
		fail "BAT entry 0 is still 0 in the image after dd conv=fsync returned (write-through $dev, commit_interval_ms:600000)"

	dd if=/dev/urandom of=/dev/mapper/"$1" bs=64k count=1 seek=1 oflag=direct,dsync status=none
	[ "$(bat_entry "$dev" 1)" != 0 ] ||
		fail "BAT entry 1 is still 0 in the image after an O_DSYNC (FUA) write returned (write-through $dev)"

	expect_eq "$(cat /sys/block/"$(blkdev "$1")"/queue/write_cache)" "write back" \
		"write_cache of the parallels device over write-through $dev"

	cmp c0.bin <(dd if=/dev/mapper/"$1" bs=64k count=1 iflag=direct status=none) ||
		fail "cluster 0 does not read back"
	wt_end=$(status_field "$1" 6)
	dm_remove "$1"
}

# A loop device set to "write through" (the issue's reproducer; from 6.11
# on, dm stacks the loop's cache feature regardless, so only 6.1 shows it).
case_writethrough_loop() {
	local l q
	qemu-img create -q -f parallels -o cluster_size=64k wt.hds 16M
	truncate -s 64M wt.hds
	l=$(loop_rw wt.hds)
	q=/sys/block/${l#/dev/}/queue/write_cache
	echo "write through" > "$q"
	expect_eq "$(cat "$q")" "write through" "$l write_cache"
	writethrough wt "$l"
	losetup -d "$l"
	truncate -s $((wt_end * 512)) wt.hds
	qemu_ok wt.hds
}

# A brd ram disk: no write cache on any kernel.
case_writethrough_brd() {
	if lsmod | grep -q '^brd '; then
		note "brd is loaded already: not run"
		return 0
	fi
	modprobe brd rd_nr=1 rd_size=65536
	at_exit "rmmod brd"
	[ -b /dev/ram0 ] || fail "no /dev/ram0 after modprobe brd"
	qemu-img create -q -f parallels -o cluster_size=64k wb.hds 16M
	dd if=wb.hds of=/dev/ram0 bs=64k oflag=direct status=none
	writethrough wb /dev/ram0
	dd if=/dev/ram0 of=wb.hds bs=512 count="$wt_end" status=none
	qemu_ok wb.hds
}

# deferred [suspend]: with "suspend", a dmsetup suspend is sent while the
# fsync's flush waits in the target: the flush the target then sends down
# must go to the image device, not back into the suspended dm device (where
# it would wait for a resume, and the suspend for it).
deferred() {
	local l lg n end rc D=4000 A=20 B=10 how=${1:-}
	qemu-img create -q -f parallels -o cluster_size=64k fl.hds 16M
	truncate -s 64M fl.hds
	truncate -s 64M fl.log
	l=$(loop_rw fl.hds)
	lg=$(loop_rw fl.log)
	n=$(blockdev --getsz "$l")
	# Reads and writes pass at once, flushes are held D ms.  The delay is
	# below log-writes, so the log sees each flush when it is sent.
	dm_create fl-delay "0 $n delay $l 0 0 $l 0 0 $l 0 $D"
	dm_create fl-lw "0 $n log-writes /dev/mapper/fl-delay $lg"
	dm_create fl "0 32768 parallels /dev/mapper/fl-lw - 1 commit_interval_ms:200"

	# B: allocated and committed; the table then has nothing to commit.
	dd if=/dev/urandom of=/dev/mapper/fl bs=64k count=1 seek=$B oflag=direct status=none
	dmsetup message fl 0 commit
	[ "$(bat_entry "$l" $B)" != 0 ] || fail "setup: BAT entry $B not committed"
	expect_eq "$(bat_entry "$l" $A)" 0 "setup: BAT entry $A"
	head -c 4096 /dev/urandom > b.bin

	# A: a new cluster, no flush.  The periodic commit follows: flush
	# (held D ms), BAT write, flush (held D ms).  The python below watches the
	# file for the BAT entry (the second flush is sent right after it),
	# writes B 1 s later, fsyncs, and says if B's write completed while
	# that flush was still held (else the test proves nothing).
	dd if=/dev/urandom of=/dev/mapper/fl bs=64k count=1 seek=$A oflag=direct status=none
	rc=0
	python3 - "$l" $A /dev/mapper/fl $(((B * 16 + 3) * 4096)) b.bin $D "$how" <<'EOF' || rc=$?
import mmap
import os
import struct
import subprocess
import sys
import threading
import time

img, a, dev, boff, bfile, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3], \
    int(sys.argv[4]), sys.argv[5], int(sys.argv[6]) / 1000
buf = mmap.mmap(-1, 4096)
fd = os.open(img, os.O_RDONLY | os.O_DIRECT)
t0 = time.monotonic()
while True:
    os.preadv(fd, [buf], 0)
    if struct.unpack_from('<I', buf, 64 + 4 * a)[0]:
        break
    if time.monotonic() - t0 > 30:
        print('# the periodic commit of cluster %d never wrote the BAT' % a)
        sys.exit(2)
    time.sleep(0.02)
os.close(fd)
seen = time.monotonic()
print('# BAT entry %d on disk %.2f s after the write: the second flush is held now'
      % (a, seen - t0))
time.sleep(1.0)
buf[:] = open(bfile, 'rb').read()
fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
os.pwrite(fd, buf, boff)
wrote = time.monotonic()
susp = {}


def suspend():
    time.sleep(0.3)         # the fsync's flush is waiting in the target now
    susp['rc'] = subprocess.run(['timeout', '20', 'dmsetup', 'suspend', 'fl']).returncode


th = threading.Thread(target=suspend)
if sys.argv[7] == 'suspend':
    th.start()
os.fsync(fd)
synced = time.monotonic()
os.close(fd)
if sys.argv[7] == 'suspend':
    th.join()
    subprocess.run(['dmsetup', 'resume', 'fl'])
    print('# dmsetup suspend during the fsync: exit %d' % susp['rc'])
    if susp['rc']:
        sys.exit(3)
print("# B written %.2f s after the BAT was seen, fsync took %.2f s"
      % (wrote - seen, synced - wrote))
if wrote - seen > delay - 0.5:
    print("# B's write completed too late: the commit's second flush may have "
          "completed already, the test proves nothing (timing)")
    sys.exit(2)
EOF
	[ $rc -ne 3 ] || fail "a suspend while a flush waited in the target did not complete"
	[ $rc -eq 0 ] || fail "setup: cannot place B's write inside the commit (see above)"
	dmsetup message fl-lw 0 mark fsync-returned

	cmp b.bin <(dd if=/dev/mapper/fl bs=4k count=1 skip=$((B * 16 + 3)) iflag=direct status=none) ||
		fail "cluster $B does not read back"
	end=$(status_field fl 6)
	dm_remove fl
	dm_remove fl-lw
	dm_remove fl-delay
	losetup -d "$lg"
	losetup -d "$l"
	truncate -s $((end * 512)) fl.hds
	qemu_ok fl.hds
	# The suspend commits and flushes: the log proves nothing more.
	[ "$how" != suspend ] || return 0

	# The log, in order of completion, flushes at their submission.
	rc=0
	python3 - "$tools" fl.log b.bin $A <<'EOF' || rc=$?
import struct
import sys
sys.path.insert(0, sys.argv[1])
from crashtest import entries, FLUSH, FUA, MARK  # noqa: E402

log, bdata, a = sys.argv[2], open(sys.argv[3], 'rb').read(), int(sys.argv[4])
off = 64 + 4 * a
bat = b = m = None
kinds = []
with open(log, 'rb') as f:
    for idx, sector, nsec, flags, mark, pos in entries(log):
        what = []
        if flags & FLUSH:
            what.append('FLUSH')
        if flags & FUA:
            what.append('FUA')
        if mark:
            what.append('MARK %s' % mark)
            if mark == 'fsync-returned':
                m = idx
        if pos is not None:
            what.append('write %d+%d' % (sector, nsec))
            if bat is None and sector * 512 <= off < (sector + nsec) * 512:
                f.seek(pos + off - sector * 512)
                if struct.unpack('<I', f.read(4))[0]:
                    bat = idx
                    what.append('(BAT entry A)')
            if nsec * 512 == len(bdata):
                f.seek(pos)
                if f.read(len(bdata)) == bdata:
                    b = idx
                    what.append("(B's write)")
        kinds.append((idx, flags))
        print('# log %3d: %s' % (idx, ' '.join(what)))
if bat is None or b is None or m is None:
    print('# log: BAT write %s, B %s, mark %s: not all found' % (bat, b, m))
    sys.exit(2)
f2 = [i for i, fl in kinds if i > bat and fl & FLUSH]
if not f2 or b < f2[0]:
    print("# B's write landed before the commit's second flush was sent: "
          "the window was missed, the test proves nothing (timing)")
    sys.exit(2)
after = [i for i, fl in kinds if b < i < m and fl & (FLUSH | FUA)]
print("# B's write: entry %d, the commit's second flush: entry %d, fsync returned: "
      "mark %d, flushes between: %s" % (b, f2[0], m, after))
sys.exit(0 if after else 1)
EOF
	case $rc in
	0) ;;
	1) fail "the fsync of cluster $B returned with no flush sent to the image device after its write" ;;
	*) fail "the log does not show the sequence the test set up (see above)" ;;
	esac
}
case_deferred() { deferred; }
case_deferred_suspend() { deferred suspend; }

run_case writethrough_loop
run_case writethrough_brd
run_case deferred
run_case deferred_suspend
cases_done
