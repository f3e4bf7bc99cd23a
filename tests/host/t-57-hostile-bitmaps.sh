#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Hostile dirty bitmaps (issue 15): a format extension (right MD5) whose
# bitmap claims a huge disk at 512-byte granularity, in a sparse file of a
# few MiB.  prldisk used to allocate it whole: 16 GiB calloc for a 64 TiB
# disk (40 s to count it, or abort under a memory limit), 1 GiB touched
# (1.1 GB RSS) for an all-set 4 TiB one, and a whole 64 MiB cluster for a
# bitmap of 16 KiB.  Now a bitmap of more granules than the target keeps
# (2^31, prl_format.h) is refused at once, exit 1, one line naming the
# image and the granularity; one at the limit is served; one that does not
# fit the memory at hand is refused with a message, never an abort.
# An offline snapshot copies the top's bitmap into the new top: it used to
# write until the file system was full, then leave the new file there; now
# it checks the free space first (as root: on a small tmpfs).
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd python3 timeout
GEN=$SRC/tests/tools/hostile-bitmap.py
MEM=200000	# KiB of address space for each prldisk run

# run NAME KIB CMD...: prldisk CMD... with at most KIB of address space
# and 20 s; status in $rc, output in NAME.out / NAME.err, time in $ms.
run() {
	local name=$1 kib=$2 t0
	shift 2
	t0=$(date +%s%N)
	rc=0
	(ulimit -v "$kib"; exec timeout -k 2 20 "$PRLDISK" "$@") \
		> "$name.out" 2> "$name.err" || rc=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	note "$name: prldisk $*: status $rc in $ms ms: $(head -c 300 "$name.err")"
}

# refused NAME WANT CMD...: exit 1 within 3 s, one line on stderr naming
# the image and saying WANT, nothing on stdout.
refused() {
	local name=$1 want=$2
	shift 2
	run "$name" "$MEM" "$@"
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then fail "$name: did not end in 20 s"; fi
	expect_eq "$rc" 1 "$name: exit status"
	[ "$ms" -lt 3000 ] || fail "$name: took $ms ms"
	expect_eq "$(wc -l < "$name.err")" 1 "$name: lines on stderr"
	grep -qF -- "$want" "$name.err" || fail "$name: '$(cat "$name.err")' does not say '$want'"
	grep -qF -- "${*: -1}" "$name.err" || fail "$name: the message does not name the image"
}

# 8 MiB clusters: a 64 TiB disk has a 32 MiB BAT, 2048 L1 entries.
case_huge() {
	expect_eq "$(python3 "$GEN" huge.hds 16384 $((1 << 37)) 1 0)" $((1 << 37)) "bits"
	for c in list show diff; do
		refused "huge-$c" "granularity (1 sectors)" bitmap "$c" huge.hds
	done
	refused huge-export "over the 2147483648" bitmap export --qcow2 x.qcow2 huge.hds
	[ ! -e x.qcow2 ] || fail "export wrote x.qcow2"
	refused huge-json "granularity" bitmap list --json huge.hds
}

# 4 TiB, every L1 entry "all set": each cluster used to be memset whole.
case_allset() {
	python3 "$GEN" allset.hds 16384 $((1 << 33)) 1 1 > /dev/null
	refused allset-list "makes 8589934592 bits" bitmap list allset.hds
	refused allset-diff "makes 8589934592 bits" bitmap diff allset.hds
}

# The limit: 2^31 granules are served (256 MiB: more than MEM), one more
# is refused; under MEM the one at the limit is refused with a message.
case_limit() {
	python3 "$GEN" limit.hds 16384 $((1 << 31)) 1 0 > /dev/null
	python3 "$GEN" over.hds 16384 $(((1 << 31) + 1)) 1 0 > /dev/null
	run limit 1000000 bitmap list limit.hds
	expect_eq "$rc" 0 "limit: exit status ($(cat limit.err))"
	grep -qF "0 of 2147483648 changed" limit.out || fail "limit: $(cat limit.out)"
	refused over "makes 2147483649 bits" bitmap list over.hds
	refused limit-mem "not enough memory" bitmap list limit.hds
}

# A 64 MiB disk in 64 MiB clusters, all set: 16 KiB of bits, not a second
# 64 MiB next to the extension cluster.
case_bigcluster() {
	python3 "$GEN" big.hds 131072 131072 1 1 > /dev/null
	run big 120000 bitmap list big.hds
	expect_eq "$rc" 0 "big: exit status ($(cat big.err))"
	grep -qF "131072 of 131072 changed, trusted" big.out || fail "big: $(cat big.out)"
}

# A bitmap like QEMU's stays as it was: 1024 granules of 64 KiB, all set.
case_small() {
	python3 "$GEN" small.hds 128 131072 128 1 > /dev/null
	run small "$MEM" bitmap diff small.hds
	expect_eq "$rc" 0 "small: exit status ($(cat small.err))"
	expect_eq "$(cat small.out)" "0 67108864" "small: diff"
}

# A 64 GiB disk, 1 MiB clusters, a 16 MiB bitmap of mixed clusters on a
# 24 MiB tmpfs: the root fits, a copy of its bitmap does not.
case_space() {
	if [ "$(id -u)" != 0 ]; then note "space: needs root to mount a tmpfs: not run"; return 0; fi
	mkdir small
	mount -t tmpfs -o size=24M tmpfs small
	at_exit "! mountpoint -q '$T/small' || umount '$T/small'"
	"$PRLDISK" create small/d --size 64G --cluster-size 1M > /dev/null
	python3 "$GEN" small/d/root.hds 2048 $((1 << 27)) 1 data > /dev/null
	sha256sum small/d/root.hds small/d/DiskDescriptor.xml > space.sum
	free0=$(df -B1 --output=avail small | tail -n 1)
	run space "$MEM" snapshot small/d
	expect_eq "$rc" 1 "space: snapshot exit status"
	expect_eq "$(wc -l < space.err)" 1 "space: lines on stderr"
	grep -qF "needs 17825792 bytes of free space" space.err || fail "space: $(cat space.err)"
	sha256sum -c --quiet space.sum >&2 || fail "space: the disk changed"
	expect_eq "$(find small/d -name 'root.hds.*' | wc -l)" 0 "space: new files left"
	expect_eq "$(df -B1 --output=avail small | tail -n 1)" "$free0" "space: free space after"
}

run_case huge
run_case allset
run_case limit
run_case bigcluster
run_case small
run_case space
cases_done
