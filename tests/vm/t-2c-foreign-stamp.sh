#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Images with a foreign creator stamp in in_use (issue 16, first item):
# Parallels Desktop writes "pd17" / "pd22" where the spec has in_use.
# - a read-only table serves a stamped image (made by qemu-img, 1 MiB
#   clusters) as QEMU reads it, writes nothing and logs nothing;
# - a read-write table takes it as closed by older software: one kernel log
#   line names the stamp, the dirty bitmap in its format extension is not
#   trusted (every granule dirty; the same image closed as v2.1 keeps its
#   bitmap), writes read back, and after removal QEMU checks the image
#   clean, it equals the raw reference and in_use is the target's closed
#   value, 0 without a format extension (Documentation/dm-parallels.rst);
# - prldisk activate / deactivate of a stamped disk folder (v1, 1 MiB
#   clusters, as Parallels Desktop makes them).
# vm-timeout: 300
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img qemu-io python3 dmsetup losetup cmp

P=$SRC/userspace/prldisk
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"
SZ=131072			# 64 MiB
in_use() { od -An -tx4 -j44 -N4 "$1" | tr -d ' '; }
stamp() { printf '%s' "$2" | dd of="$1" bs=1 seek=44 conv=notrunc status=none; }
field() { dmsetup status "$1" | awk -v f="$2" '{ print $f }'; }
stamp_lines() { dmesg_since_mark | grep -c "foreign creator stamp '$1'" || :; }
# wr DEV REF OFFSET LEN (bytes): the same random data into both, direct
wr() {
	head -c "$4" /dev/urandom > wr.tmp
	dd if=wr.tmp of="$1" bs=64k seek="$3" oflag=direct,seek_bytes conv=fsync status=none
	dd if=wr.tmp of="$2" bs=64k seek="$3" oflag=seek_bytes conv=notrunc status=none
}
# cut NAME FILE: suspend, then remove NAME and cut FILE at its image end
cut_rm() {
	dmsetup suspend "$1"
	_end=$(field "$1" 6)
	dm_remove "$1"
	truncate -s $((_end * 512)) "$2"
}
# A reference with data in a few 1 MiB clusters, and its Parallels copy.
truncate -s 64M ref.raw
for c in 0 5 33 63; do
	head -c 1048576 /dev/urandom | dd of=ref.raw bs=1M seek=$c conv=notrunc status=none
done
qemu-img convert -f raw -O parallels -o cluster_size=1M ref.raw base.hds

case_read_only() {
	cp base.hds ro.hds
	stamp ro.hds pd17
	sum=$(sha256sum < ro.hds)
	l=$(loop_ro ro.hds)
	dmesg_mark
	dm_create ro "0 $SZ parallels $l -" --readonly
	expect_eq "$(field ro 7)" ro "state of a read-only table"
	cmp /dev/mapper/ro ref.raw || fail "read-only table differs from QEMU's view"
	dm_remove ro
	losetup -d "$l"
	expect_eq "$(stamp_lines pd17)" 0 "log lines of a read-only table"
	expect_eq "$(sha256sum < ro.hds)" "$sum" "image after a read-only table"
}

case_read_write() {
	cp base.hds rw.hds
	cp ref.raw rw.raw
	stamp rw.hds pd22
	truncate -s 96M rw.hds
	l=$(loop_rw rw.hds)
	dmesg_mark
	dm_create rw "0 $SZ parallels $l -"
	expect_eq "$(field rw 7)" rw "state of a read-write table"
	expect_eq "$(stamp_lines pd22)" 1 "log lines naming the stamp"
	dmesg_since_mark | grep -F "foreign creator stamp" >&2
	cmp /dev/mapper/rw rw.raw || fail "read-write table differs from QEMU's view"
	# the stamp stays until the first write
	expect_eq "$(in_use rw.hds)" 32326470 "in_use before the first write"
	wr /dev/mapper/rw rw.raw $((5 << 20)) 65536
	wr /dev/mapper/rw rw.raw $((20 << 20)) $((3 << 20))
	expect_eq "$(in_use rw.hds)" 746f6e59 "in_use after the first write"
	cmp /dev/mapper/rw rw.raw || fail "read back after writes"
	cut_rm rw rw.hds
	losetup -d "$l"
	expect_eq "$(in_use rw.hds)" 00000000 "in_use after removal (documented close value)"
	qemu-img check -f parallels rw.hds >&2 || fail "qemu-img check after removal"
	qemu-img compare -f parallels rw.hds -F raw rw.raw >&2 ||
		fail "qemu-img compare after removal"
}

# The dirty bitmap of a stamped image is not trusted; the same image closed
# as v2.1 (the control) keeps its one dirty granule.
case_bitmap() {
	for v in v21 stamp; do
		cp base.hds "b-$v.hds"
		python3 "$SRC/tests/tools/add-bitmap.py" "b-$v.hds" 2048 4096 >/dev/null
		[ $v = v21 ] || stamp "b-$v.hds" pd17
		truncate -s 96M "b-$v.hds"
		l=$(loop_rw "b-$v.hds")
		dmesg_mark
		dm_create "b$v" "0 $SZ parallels $l - 1 cbt"
		case $v in
		v21) expect_eq "$(field "b$v" 8)" 1/64 "dirty granules of a v2.1 bitmap"
		     expect_eq "$(stamp_lines pd17)" 0 "log lines of a v2.1 image" ;;
		*) expect_eq "$(field "b$v" 8)" 64/64 "dirty granules of a stamped image's bitmap"
		   expect_eq "$(stamp_lines pd17)" 1 "log lines naming the stamp" ;;
		esac
		cmp /dev/mapper/"b$v" ref.raw || fail "bitmap image $v differs from QEMU's view"
		dm_remove "b$v"
		losetup -d "$l"
	done
}

case_activate() {
	"$P" create pd --size 64M --cluster-size 1M --image-format v1 >&2
	qemu-io -f parallels -c "write -P 7 1M 2M" -c "write -P 8 40M 1M" pd/root.hds >/dev/null
	stamp pd/root.hds pd17
	qemu-img convert -f parallels -O raw pd/root.hds pd.raw
	at_exit "cd / && $P deactivate pdstamp >/dev/null 2>&1"
	dmesg_mark
	dev=$("$P" activate "$T/pd/DiskDescriptor.xml" --name pdstamp)
	expect_eq "$dev" /dev/mapper/pdstamp "activated device"
	expect_eq "$(stamp_lines pd17)" 1 "log lines naming the stamp"
	cmp "$dev" pd.raw || fail "activated disk differs from QEMU's view"
	wr "$dev" pd.raw $((10 << 20)) 131072
	(cd / && "$P" deactivate pdstamp) >&2 || fail "prldisk deactivate"
	expect_eq "$(in_use pd/root.hds)" 00000000 "in_use after deactivate"
	qemu-img check -f parallels pd/root.hds >&2 || fail "qemu-img check after deactivate"
	qemu-img compare -f parallels pd/root.hds -F raw pd.raw >&2 ||
		fail "qemu-img compare after deactivate"
	"$P" check pd >&2 || fail "prldisk check after deactivate"
}

run_case read_only
run_case read_write
run_case bitmap
run_case activate
cases_done
nothing_left "t-2c"
