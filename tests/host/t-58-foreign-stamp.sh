#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Images with a foreign creator stamp in in_use (issue 16, first item).
# Parallels Desktop writes "pd17" / "pd22" (ASCII) at offset 44, where the
# spec has in_use; QEMU 7.2 opens, checks and compares such an image.
# prldisk info and check name the stamp and exit clean, check --repair
# leaves it, and after prldisk wrote the image (resize) it is closed as
# documented (in_use 0, as QEMU 7.2 closes it) and QEMU still judges it
# clean and equal to the raw reference.
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd python3 qemu-img qemu-io od

patch=$SRC/tests/tools/patch-image.py
in_use() { od -An -tx4 -j44 -N4 "$1" | tr -d ' '; }
# stamp IMAGE TEXT|0xVALUE: write it at offset 44, as Parallels Desktop does
stamp() {
	case $2 in
	0x*) python3 "$patch" "$1" "in_use=$2" ;;
	*) printf '%s' "$2" | dd of="$1" bs=1 seek=44 conv=notrunc status=none ;;
	esac
}
# qemu_ok WHAT IMAGE RAW: qemu-img check clean, content equal to RAW
qemu_ok() {
	qemu-img check -q -f parallels "$2" >&2 || fail "$1: qemu-img check of $2"
	qemu-img compare -q -f parallels "$2" -F raw "$3" >&2 ||
		fail "$1: qemu-img compare of $2 with $3"
}

# A random value the spec does not list (0, 0x746f6e59, 0x312e3276).
rnd=0x$(od -An -tx4 -N4 /dev/urandom | tr -d ' ')
case $rnd in 0x00000000 | 0x746f6e59 | 0x312e3276) rnd=0x5a5aa5a5 ;; esac
note "random stamp $rnd"

# The reference content: a pattern in some 1 MiB clusters, holes elsewhere.
truncate -s 64M ref.raw
for c in 0 3 17 40 63; do
	head -c 1048576 /dev/urandom | dd of=ref.raw bs=1M seek=$c conv=notrunc status=none
done

n=0
for how in create convert; do
	for st in pd17 pd22 "$rnd"; do
		n=$((n + 1))
		img=i$n.hds
		ref=r$n.raw
		cp --sparse=always ref.raw "$ref"
		if [ $how = create ]; then
			qemu-img create -q -f parallels -o cluster_size=1M "$img" 64M
			for c in 0 3 17 40 63; do
				qemu-io -f parallels -c "write -P $((c + 1)) $((c << 20)) 1M" "$img" >/dev/null
			done
			# the reference is what QEMU reads before the stamp
			qemu-img convert -f parallels -O raw "$img" "$ref"
		else
			qemu-img convert -f raw -O parallels -o cluster_size=1M "$ref" "$img"
		fi
		stamp "$img" "$st"
		want=$(in_use "$img")
		case $st in 0x*) say="foreign creator stamp $st" ;; *) say="foreign creator stamp '$st'" ;; esac
		note "$img ($how, stamp $st)"

		# QEMU 7.2 takes the image as it is.
		qemu_ok "$img as made" "$img" "$ref"

		# info names the stamp, and exits 0; --json too.
		rc=0; "$PRLDISK" info "$img" > info.out 2> info.err || rc=$?
		cat info.err >&2
		expect_eq "$rc" 0 "prldisk info $img exit status"
		grep -qF "$say" info.out || fail "prldisk info $img does not say \"$say\": $(cat info.out)"
		rc=0; "$PRLDISK" info --json "$img" > info.json 2> info.err || rc=$?
		expect_eq "$rc" 0 "prldisk info --json $img exit status"
		grep -qF "\"foreign_stamp\":\"$st\"" info.json ||
			fail "prldisk info --json $img has no foreign_stamp: $(cat info.json)"

		# check names it and exits 0 (clean); --repair changes nothing.
		sum=$(sha256sum < "$img")
		rc=0; "$PRLDISK" check "$img" > check.out 2>&1 || rc=$?
		cat check.out >&2
		expect_eq "$rc" 0 "prldisk check $img exit status"
		grep -qF "$say" check.out || fail "prldisk check $img does not say \"$say\""
		rc=0; "$PRLDISK" check --repair "$img" > check.out 2>&1 || rc=$?
		expect_eq "$rc" 0 "prldisk check --repair $img exit status"
		expect_eq "$(sha256sum < "$img")" "$sum" "$img after check --repair"
		expect_eq "$(in_use "$img")" "$want" "in_use after info and check"
		qemu_ok "$img after prldisk info and check" "$img" "$ref"

		# prldisk writes it: resize closes it with 0, QEMU still takes it.
		rc=0; "$PRLDISK" resize "$img" --size 80M >&2 || rc=$?
		expect_eq "$rc" 0 "prldisk resize $img exit status"
		expect_eq "$(in_use "$img")" 00000000 "in_use of $img after prldisk resize"
		truncate -s 80M "$ref"
		qemu_ok "$img after prldisk resize" "$img" "$ref"
		rc=0; "$PRLDISK" check "$img" > check.out 2>&1 || rc=$?
		expect_eq "$rc" 0 "prldisk check $img after resize"
	done
done

# A Parallels Desktop style disk folder: v1 ("WithoutFreeSpace"), 1 MiB
# clusters, stamped; info lists the stamp, check of the folder is clean.
"$PRLDISK" create pd --size 64M --cluster-size 1M --image-format v1 >&2
qemu-io -f parallels -c "write -P 9 1M 2M" pd/root.hds >/dev/null
stamp pd/root.hds pd22
qemu-img convert -f parallels -O raw pd/root.hds pd.raw
rc=0; "$PRLDISK" info pd > info.out 2>&1 || rc=$?
expect_eq "$rc" 0 "prldisk info of the folder"
grep -qF "foreign creator stamp 'pd22'" info.out || fail "prldisk info pd: $(cat info.out)"
rc=0; "$PRLDISK" check pd > check.out 2>&1 || rc=$?
cat check.out >&2
expect_eq "$rc" 0 "prldisk check of the folder"
grep -qF "foreign creator stamp 'pd22'" check.out || fail "prldisk check pd: $(cat check.out)"
qemu_ok "folder image" pd/root.hds pd.raw
