#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Online snapshot-delete copies while the disk runs (issue 15): the top takes
# a 256M snapshot's clusters in short steps, each under a short suspend, the
# disk running between them.  While the delete runs, dmsetup is polled: the
# device is seen suspended more than once, its longest stretch is less than
# half of the delete (it used to be the whole copy), and a write issued
# meanwhile completes before the delete ends.  Afterwards every byte reads as before (plus that write), the
# snapshot is gone, and prldisk check and qemu-img check are clean.
# vm-timeout: 600
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img python3 dmsetup sha256sum

P=$SRC/userspace/prldisk
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
at_exit "cd / && $P deactivate disk >/dev/null 2>&1"
parent_of_top() { $P info --json "$X" | json '[i["parent"] for i in d["images"] if i["top"]][0]'; }
sum_of() { dd if=/dev/mapper/disk bs=1M skip="$1" count="$2" iflag=direct status=none | sha256sum; }

$P create disk --size 512M > /dev/null
X=$T/disk/DiskDescriptor.xml
$P activate "$X" > /dev/null
# 256M in what becomes the snapshot, 8M in the top over part of it.
dd if=/dev/urandom of=/dev/mapper/disk bs=1M count=256 oflag=direct status=none
$P snapshot "$X" > /dev/null
S=$(parent_of_top)
dd if=/dev/urandom of=/dev/mapper/disk bs=1M seek=100 count=8 oflag=direct status=none
base=$(sum_of 0 256)
dd if=/dev/urandom of=w.bin bs=1M count=1 status=none

ts=$(date +%s%N)
$P snapshot-delete "$X" "$S" > del.out 2> del.err &
pid=$!
# Poll: one line per sample, "<ms since start> <Active|Suspended>".
: > poll.txt
wrote=
while kill -0 $pid 2>/dev/null; do
	st=$(dmsetup info -c --noheadings -o suspended disk 2>/dev/null || echo gone)
	echo "$((($(date +%s%N) - ts) / 1000000)) $st" >> poll.txt
	# Once the copy has begun (the device was suspended once): a write.
	if [ -z "$wrote" ] && grep -q Suspended poll.txt; then
		w0=$(date +%s%N)
		dd if=w.bin of=/dev/mapper/disk bs=1M seek=400 oflag=direct status=none
		wms=$((($(date +%s%N) - w0) / 1000000))
		if kill -0 $pid 2>/dev/null; then wrote=during; else wrote=after; fi
	fi
	sleep 0.05
done
wait $pid || fail "online delete: $(cat del.err)"
total=$((($(date +%s%N) - ts) / 1000000))
[ ! -s del.err ] || fail "snapshot-delete printed: $(cat del.err)"
# A stretch lasts from its first Suspended sample to the next other one.
read -r longest steps < <(awk '
	$2 == "Suspended" { if (s < 0) { s = $1; n++ } next }
	{ if (s >= 0 && $1 - s > m) m = $1 - s; s = -1 }
	BEGIN { s = -1 }
	END { print m + 0, n + 0 }' poll.txt)
note "delete took $total ms; suspended stretches seen: $steps, the longest $longest ms; the write took $wms ms and completed $wrote the delete"
[ "$steps" -ge 2 ] || fail "the device was seen suspended $steps times: the copy was not split into steps ($(tr '\n' ' ' < poll.txt | head -c 600))"
# Relative, not timed: under TCG on a busy host absolute times mean little,
# but one stretch covering most of the delete is the old whole-copy freeze.
[ $((longest * 2)) -lt "$total" ] || fail "the device stayed suspended for $longest ms of $total ms: frozen I/O during the copy"
expect_eq "$wrote" during "a write issued during the copy completed while the delete ran"

# The data: every byte as before, and the write.
expect_eq "$(sum_of 0 256)" "$base" "the first 256M after the delete"
expect_eq "$(sum_of 400 1)" "$(sha256sum < w.bin)" "the write made during the delete"
[ "$($P info --json "$X" | json 'len(d["images"])')" = 1 ] || fail "the snapshot is still in the descriptor"
(cd / && $P deactivate disk > /dev/null)
nothing_left "after deactivate"
$P check "$X" > check.out 2>&1 || fail "prldisk check: $(cat check.out)"
for f in "$T"/disk/*.hds*; do
	qemu-img check -q -f parallels "$f" || fail "qemu-img check $f"
done
$P activate "$X" > /dev/null
expect_eq "$(sum_of 0 256)" "$base" "the first 256M after deactivate / activate"
(cd / && $P deactivate disk > /dev/null)
nothing_left "at the end"
