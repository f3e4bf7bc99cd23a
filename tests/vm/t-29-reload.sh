#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `dmsetup reload` + `resume` of a live read-write table, the way lvm2 and
# any dm user change a table: it must work while the table is written, lose
# nothing and hand out no cluster twice.
#
# live: a table that has written is reloaded with the same line and
#   resumed; the data reads back, later writes land, and the image passes
#   qemu-img check and compares identical to a raw reference.
# stale: a reload prepared before writes (accepted even today, nothing was
#   written yet) and resumed after them: the new table must serve what the
#   old one wrote in between, and allocate after it.
# fio: fio with crc32c verify (random overwrites and allocations, several
#   jobs) while the table is reloaded and resumed every few seconds: no fio error;
#   a dump of the device then compares identical to the image (the BAT on
#   disk is what the live device served) and qemu-img check is clean.
# grow: the image device full (ENOSPC), then grown (truncate, losetup -c)
#   and the table reloaded: new clusters can be allocated again.
# shrink: a reload whose len cuts off allocated data is refused with a
#   message, for that reason (not the in-use flag), and the device keeps
#   working on its old table.
# A read-write reload over a read-only table of an image left open is
# refused at load, and the device keeps serving.
# vm-timeout: 300
set -eEu
. "$SRC/tests/vm/lib.sh"
require_cmd fio qemu-img

status_field() { dmsetup status "$1" | awk -v f="$2" '{ print $f }'; }

# w DEV REF SEEK COUNT: the same random 4 KiB blocks to DEV and to the raw
# reference REF, at block SEEK.
w() {
	head -c $(($4 * 4096)) /dev/urandom > w.bin
	dd if=w.bin of="$1" bs=4k seek="$3" oflag=direct status=none
	dd if=w.bin of="$2" bs=4k seek="$3" conv=notrunc status=none
}

# reload NAME TABLE: reload and resume, failing with what dm said.
reload() {
	dmesg_mark
	dmsetup reload "$1" --table "$2" 2> reload.err ||
		fail "dmsetup reload $1 of its live table refused: $(tr '\n' ' ' < reload.err)/ kernel: $(dmesg_since_mark | grep -F 'parallels' | tail -n 1)"
	dmsetup resume "$1" || fail "dmsetup resume $1 after a reload"
}

# done_image NAME LOOP IMAGE REF: remove, cut the file at the image end,
# qemu-img check (leaks allowed) and compare with REF.
done_image() {
	local end rc=0
	end=$(status_field "$1" 6)
	dm_remove "$1"
	losetup -d "$2"
	truncate -s $((end * 512)) "$3"
	qemu-img check -q -f parallels "$3" || rc=$?
	[ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "$3: qemu-img check exit $rc"
	qemu-img compare -q -f parallels "$3" -F raw "$4" || fail "$3 differs from $4"
}

# new_disk X: a 32 MiB image X.hds (64 KiB clusters, room to grow), its
# raw reference X.ref, a read-write table rX over it; sets l and tbl.
new_disk() {
	qemu-img create -q -f parallels -o cluster_size=64k "$1.hds" 32M
	truncate -s 64M "$1.hds"
	truncate -s 32M "$1.ref"
	l=$(loop_rw "$1.hds")
	tbl="0 65536 parallels $l -"
	dm_create "r$1" "$tbl"
}

case_live() {
	local l tbl live
	new_disk a
	live=$(dmsetup table ra)
	w /dev/mapper/ra a.ref 0 256		# 16 new clusters
	w /dev/mapper/ra a.ref 1000 3		# a partial new one
	reload ra "$tbl"
	expect_eq "$(dmsetup table ra)" "$live" "table after the reload"
	cmp /dev/mapper/ra a.ref || fail "reads differ after reload + resume"
	w /dev/mapper/ra a.ref 10 5		# overwrite
	w /dev/mapper/ra a.ref 2000 20		# new clusters
	reload ra "$tbl"
	w /dev/mapper/ra a.ref 4000 16
	cmp /dev/mapper/ra a.ref || fail "reads differ after a second reload"
	done_image ra "$l" a.hds a.ref
}

case_stale() {
	local l tbl
	new_disk s
	dmsetup reload rs --table "$tbl"	# nothing written yet
	w /dev/mapper/rs s.ref 0 64		# 4 new clusters, live table
	w /dev/mapper/rs s.ref 500 3
	dmsetup resume rs
	cmp /dev/mapper/rs s.ref || fail "what the old table wrote between reload and resume reads differently after the resume"
	w /dev/mapper/rs s.ref 3000 32		# new clusters, new table
	cmp /dev/mapper/rs s.ref || fail "reads differ after allocating on the new table"
	done_image rs "$l" s.hds s.ref
}

case_fio() {
	local l tbl n=0 fpid end rc=0
	qemu-img create -q -f parallels -o cluster_size=64k f.hds 128M
	truncate -s 256M f.hds
	l=$(loop_rw f.hds)
	tbl="0 262144 parallels $l -"
	dm_create rf "$tbl"
	# Three random writers over 32 MiB each (new clusters, partial ones
	# filled, and overwrites), one sequential allocating writer; every
	# block verified (crc32c) soon after it is written.
	fio --filename=/dev/mapper/rf --ioengine=libaio --direct=1 \
		--verify=crc32c --verify_fatal=1 --verify_backlog=16 --randseed=29 \
		--time_based --runtime=24 --group_reporting --output-format=terse \
		--name=rand --rw=randwrite --bsrange=4k-64k --numjobs=3 --iodepth=4 \
		--size=32M --offset_increment=32M \
		--name=seq --rw=write --bs=24k --offset=96M --size=32M --iodepth=2 \
		> fio.out 2> fio.err &
	fpid=$!
	at_exit "kill $fpid 2>/dev/null || true"
	# Reloads start once fio has written: the table is open then.
	for _ in $(seq 1 150); do
		[ "$(status_field rf 4 | cut -d/ -f1)" = 0 ] || break
		sleep 0.2
	done
	while sleep 1.5 && kill -0 $fpid 2>/dev/null; do
		dmesg_mark
		if ! dmsetup reload rf --table "$tbl" 2> reload.err; then
			kill $fpid 2>/dev/null || true
			wait $fpid 2>/dev/null || true
			fail "reload $((n + 1)) under fio refused: $(tr '\n' ' ' < reload.err)/ kernel: $(dmesg_since_mark | grep -F 'parallels' | tail -n 1)"
		fi
		dmsetup resume rf || fail "resume $((n + 1)) under fio"
		n=$((n + 1))
	done
	wait $fpid || rc=$?
	[ $rc -eq 0 ] || fail "fio under reloads: exit $rc: $(tail -n 5 fio.err) $(tail -c 300 fio.out)"
	note "fio: $(awk -F';' '{ w += $47; r += $6 } END { print "written " w " KiB, read " r " KiB" }' fio.out), $n reloads, allocated $(status_field rf 4)"
	# A loaded host slows the VM: a few reloads are enough to mean it.
	[ $n -ge 3 ] || fail "only $n reloads while fio ran"
	dd if=/dev/mapper/rf of=f.dump bs=1M iflag=direct status=none
	done_image rf "$l" f.hds f.dump
}

case_grow() {
	local l tbl size
	qemu-img create -q -f parallels -o cluster_size=64k g.hds 32M
	truncate -s 32M g.ref
	size=$(stat -c %s g.hds)
	truncate -s $((size + 2 * 65536)) g.hds		# room for two clusters
	l=$(loop_rw g.hds)
	tbl="0 65536 parallels $l -"
	dm_create rg "$tbl"
	w /dev/mapper/rg g.ref 0 16
	w /dev/mapper/rg g.ref 16 16
	expect_err 'No space left on device' dd if=/dev/urandom of=/dev/mapper/rg bs=64k seek=2 count=1 oflag=direct status=none
	expect_eq "$(status_field rg 9)" 1 "writes refused for space"
	truncate -s 64M g.hds
	losetup -c "$l"
	expect_eq "$(blockdev --getsz "$l")" 131072 "size of the grown image device"
	reload rg "$tbl"
	w /dev/mapper/rg g.ref 32 64		# four new clusters
	w /dev/mapper/rg g.ref 5000 3
	cmp /dev/mapper/rg g.ref || fail "reads differ after growing"
	expect_eq "$(status_field rg 4 | cut -d/ -f1)" 7 "allocated clusters after growing"
	done_image rg "$l" g.hds g.ref
}

case_shrink() {
	local l tbl msg live
	new_disk k
	live=$(dmsetup table rk)
	w /dev/mapper/rk k.ref 8000 16		# cluster 500, past 16 MiB
	# Closed (suspend commits and closes): the in-use flag cannot be
	# why a reload is refused.
	dmsetup suspend rk
	dmsetup resume rk
	dmesg_mark
	if dmsetup reload rk --table "0 32768 parallels $l -" 2> reload.err; then
		dmsetup clear rk
		fail "a reload to 16 MiB was accepted with cluster 500 (at 31 MiB) allocated"
	fi
	note "refused: $(tr '\n' ' ' < reload.err)"
	msg=$(dmesg_since_mark | grep -F 'parallels' | tail -n 1)
	[ -n "$msg" ] || fail "the refused shrink left no message in the kernel log"
	note "kernel: $msg"
	# Live, written since the resume.
	w /dev/mapper/rk k.ref 48 16
	dmesg_mark
	if dmsetup reload rk --table "0 32768 parallels $l -" 2> reload.err; then
		dmsetup clear rk
		fail "a reload of the live table to 16 MiB was accepted with cluster 500 allocated"
	fi
	msg=$(dmesg_since_mark | grep -F 'parallels' | tail -n 1)
	note "kernel: $msg"
	case $msg in
	'') fail "the refused shrink of the live table left no message in the kernel log" ;;
	*'in use'*) fail "the shrink of the live table was refused for the in-use flag, not for the length: $msg" ;;
	esac
	# Still the old table, working.
	expect_eq "$(dmsetup table rk)" "$live" "table after the refused reloads"
	dmsetup info rk | grep -q '^Tables present: *LIVE$' || fail "an inactive table is left: $(dmsetup info rk | grep Tables)"
	w /dev/mapper/rk k.ref 100 20
	cmp /dev/mapper/rk k.ref || fail "reads differ after the refused reloads"
	done_image rk "$l" k.hds k.ref
}

# An image left open (a crash), served read-only: a read-write reload
# over it is refused at load, not at resume (where the old table would be
# gone and the device left suspended on a table that cannot serve).
case_open_ro() {
	local l tbl
	qemu-img create -q -f parallels -o cluster_size=64k o.hds 32M
	qemu-io -f parallels -c "write -P 7 0 64k" o.hds > /dev/null
	python3 "$SRC/tests/tools/patch-image.py" o.hds in_use=0x746F6E59
	truncate -s 64M o.hds
	l=$(loop_rw o.hds)
	tbl="0 65536 parallels $l -"
	dm_create ro "$tbl" --readonly
	expect_eq "$(status_field ro 7)" needs_check "state of the read-only table"
	dmesg_mark
	expect_err 'Device or resource busy' dmsetup reload ro --table "$tbl"
	dmesg_since_mark | grep -qF "Image in use or not closed cleanly" ||
		fail "no in-use refusal at reload: $(dmesg_since_mark | tail -n 2)"
	dmsetup resume ro
	expect_eq "$(status_field ro 7)" needs_check "state after the refused reload"
	cmp <(head -c 65536 /dev/zero | tr '\0' '\7') <(dd if=/dev/mapper/ro bs=64k count=1 iflag=direct status=none) ||
		fail "the read-only table does not serve its data after the refused reload"
	dm_remove ro
}

run_case live
run_case open_ro
run_case stale
run_case fio
run_case grow
run_case shrink
cases_done
