#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Disks from the field (issue 16), end to end:
# - a Parallels Desktop style folder Disk.hdd/ (DiskDescriptor.xml with the
#   elements Parallels Desktop adds, DiskDescriptor.xml.Backup, an empty
#   Disk.hdd, Disk.hdd.drh, Disk.hdd.0.{GUID}.hds: a v1 image with 1 MiB
#   clusters and the creator stamp "pd17" in in_use);
# - a Virtuozzo style tree, /vz/private/101/root.hdd made by Debian's
#   ploop and /vz/private/102/root.hdd made by prldisk.
# Each is activated read-only and read-write without --name, written,
# snapshotted online, deactivated; then every byte is compared with a raw
# reference kept beside it, and QEMU (qemu-img check) judges every image,
# ploop (ploop check) the one ploop made.  The Backup stays the descriptor.
# vm-timeout: 400
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd dmsetup qemu-img qemu-io cmp python3

P=$SRC/userspace/prldisk
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"
PD=$T/vms/Win.pvm/Disk.hdd
V=$T/vz/private
at_exit "cd / && for x in $PD $V/101/root.hdd $V/102/root.hdd; do $P deactivate \$x >/dev/null 2>&1; done"

# -- the Parallels Desktop folder
PRLDISK=$P "$SRC/tests/tools/pd-folder.sh" "$PD" pd17
IMG=$(echo "$PD"/Disk.hdd.0.*.hds)
qemu-img convert -f parallels -O raw "$IMG" pd.raw

# -- the Virtuozzo tree: 101 by ploop (where it is installed), 102 by prldisk
mkdir -p "$V/101/root.hdd" "$V/102"
if command -v ploop >/dev/null; then
	(cd "$V/101/root.hdd" && ploop_cmd init -s 64M -t none -f ploop1 root.hds >/dev/null 2>&1) ||
		fail "ploop init"
	ploop_made=1
else
	note "no ploop here: 101 made by prldisk too"
	"$P" create "$V/101/root.hdd" --size 64M >/dev/null
	ploop_made=
fi
"$P" create "$V/102/root.hdd" --size 64M >/dev/null
head -c 64M /dev/zero > 101.raw
head -c 64M /dev/zero > 102.raw

# name DISK: the device activate printed
# judge DISK RAW: activate read-only, every byte equals RAW, deactivate
judge() {
	local dev
	dev=$("$P" activate --read-only "$1") || fail "activate --read-only $1"
	cmp "$dev" "$2" || fail "$1 read-only: the device differs from the reference"
	"$P" deactivate "$1" >/dev/null || fail "deactivate $1"
}
# change DISK RAW TAG: read-write, write, snapshot online, write again
change() {
	local dev
	dev=$("$P" activate "$1") || fail "activate $1"
	cmp "$dev" "$2" || fail "$1: the device differs from the reference"
	head -c 2M /dev/urandom > "$3.a"
	head -c 1M /dev/urandom > "$3.b"
	dd if="$3.a" of="$dev" bs=1M seek=10 oflag=direct conv=fsync status=none
	dd if="$3.a" of="$2" bs=1M seek=10 conv=notrunc status=none
	"$P" snapshot "$1" >/dev/null || fail "online snapshot of $1"
	dd if="$3.b" of="$dev" bs=1M seek=20 oflag=direct conv=fsync status=none
	dd if="$3.b" of="$2" bs=1M seek=20 conv=notrunc status=none
	cmp "$dev" "$2" || fail "$1: after the writes the device differs"
	echo "$dev"
}

case_pd() {
	judge "$PD" pd.raw
	dev=$(change "$PD" pd.raw pd)
	note "Parallels Desktop disk served as $dev"
	"$P" deactivate "$PD" >/dev/null || fail "deactivate $PD"
	judge "$PD" pd.raw
	cmp "$PD/DiskDescriptor.xml" "$PD/DiskDescriptor.xml.Backup" ||
		fail "the Backup is not the descriptor after the changes"
	grep -qF "<Salt>q8Xz3+Lw</Salt>" "$PD/DiskDescriptor.xml" ||
		fail "the Encryption Salt was lost"
	"$P" check "$PD" >&2 || fail "prldisk check $PD"
	for f in "$PD"/*.hds*; do
		qemu-img check -q -f parallels "$f" || fail "qemu-img check $f"
	done
}
run_case pd

case_vz() {
	local d1 d2
	judge "$V/101/root.hdd" 101.raw
	judge "$V/102/root.hdd" 102.raw
	d1=$(change "$V/101/root.hdd" 101.raw c101)
	d2=$(change "$V/102/root.hdd" 102.raw c102)
	[ "$d1" != "$d2" ] || fail "both containers' disks got $d1"
	"$P" deactivate "$V/101/root.hdd" >/dev/null || fail "deactivate 101"
	cmp "$d2" 102.raw || fail "deactivating 101 disturbed 102's $d2"
	"$P" deactivate "$V/102/root.hdd" >/dev/null || fail "deactivate 102"
	judge "$V/101/root.hdd" 101.raw
	judge "$V/102/root.hdd" 102.raw
	for c in 101 102; do
		"$P" check "$V/$c/root.hdd" >&2 || fail "prldisk check $c"
		for f in "$V/$c"/root.hdd/*.hds*; do
			qemu-img check -q -f parallels "$f" || fail "qemu-img check $f"
		done
	done
	if [ -n "$ploop_made" ]; then
		for f in "$V/101"/root.hdd/*.hds*; do
			# a non-sparse copy: ploop refuses holes in the BAT area
			cp --sparse=never "$f" flat.hds
			ploop_cmd check -r flat.hds >&2 || fail "ploop check $f: status $?"
		done
	fi
}
run_case vz
cases_done
nothing_left t-35
