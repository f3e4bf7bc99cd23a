#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The state an image is left in, and the state prldisk finds (issue 15):
#   item 4: every image prldisk closes is closed as ploop 1.15 accepts it
#           (in_use 0: ploop takes any other value for "dirty"); convert v1
#           to v2 used to close with 0x312e3276, which ploop check refuses;
#   item 5: an offline snapshot of a disk whose top was not closed cleanly
#           (in_use set) is refused and says to run check --repair first.
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd python3 qemu-img qemu-io ploop
patch=$SRC/tests/tools/patch-image.py

in_use() { od -An -tx4 -j44 -N4 "$1" | tr -d ' '; }
# ploop_ok WHAT IMAGE: in_use 0 and ploop check -f (of a full copy) clean
ploop_ok() {
	expect_eq "$(in_use "$2")" 00000000 "item 4: in_use after $1"
	cp --sparse=never "$2" full.copy
	ploop_cmd check -f full.copy >&2 || fail "item 4: ploop check -f after $1"
	rm -f full.copy
	qemu-img check -q -f parallels "$2" || fail "item 4: qemu-img check after $1"
}
top_of() { ls "$1"/root.hds.* 2>/dev/null || echo "$1/root.hds"; }

# ---- item 4: ploop-compatible in_use values --------------------------------
note "item 4: in_use as ploop accepts it"
"$PRLDISK" create cv --size 64M --image-format v1 --cluster-size 64K >&2
qemu-io -f parallels -c "write -P 7 1M 3M" cv/root.hds >/dev/null
"$PRLDISK" convert cv --image-format v2 >&2
expect_eq "$(head -c 16 cv/root.hds)" WithouFreSpacExt "item 4: converted to v2"
ploop_ok "convert v1 to v2" cv/root.hds
"$PRLDISK" convert cv/root.hds --image-format v1 >&2
ploop_ok "convert v2 to v1" cv/root.hds
"$PRLDISK" convert cv/root.hds --image-format v2 >&2
ploop_ok "convert of a lone image to v2" cv/root.hds

# An image the kernel closed (0x312e3276, "v2.1") and then changed offline.
"$PRLDISK" create rs --size 64M --cluster-size 64K >&2
qemu-io -f parallels -c "write -P 8 0 2M" rs/root.hds >/dev/null
python3 "$patch" rs/root.hds in_use=0x312e3276
"$PRLDISK" resize rs --size 128M >&2
ploop_ok "resize" rs/root.hds

# check --repair of an image left open (v2 and v1).
for fmt in v2 v1; do
	"$PRLDISK" create "rp-$fmt" --size 64M --cluster-size 64K --image-format "$fmt" >&2
	qemu-io -f parallels -c "write -P 9 0 1M" "rp-$fmt/root.hds" >/dev/null
	python3 "$patch" "rp-$fmt/root.hds" in_use=0x746f6e59
	rc=0; "$PRLDISK" check --repair "rp-$fmt" >&2 || rc=$?
	expect_eq "$rc" 0 "item 4: check --repair of an image left open ($fmt)"
	ploop_ok "check --repair ($fmt)" "rp-$fmt/root.hds"
done

# snapshot-delete writes into the child, which it then closes.
"$PRLDISK" create sd --size 64M --cluster-size 64K >&2
qemu-io -f parallels -c "write -P 10 0 1M" sd/root.hds >/dev/null
g=$("$PRLDISK" snapshot --json sd | sed -n 's/.*"snapshot": *"\({[^}]*}\)".*/\1/p')
python3 "$patch" "$(top_of sd)" in_use=0x312e3276
"$PRLDISK" snapshot-delete sd "$g" >&2
ploop_ok "snapshot-delete" "$(top_of sd)"

# ---- item 5: no offline snapshot of a top that was not closed cleanly ------
note "item 5: snapshot of an unclean top"
# files DIR: names, types and content, but for the lock file (taken, so made)
files() {
	(cd "$1" && find . -mindepth 1 -maxdepth 1 ! -name DiskDescriptor.xml.lck -printf '%P %y\n' |
		LC_ALL=C sort &&
		find . -mindepth 1 -maxdepth 1 -type f ! -name DiskDescriptor.xml.lck -exec sha256sum {} + |
		LC_ALL=C sort)
}
"$PRLDISK" create un --size 64M --cluster-size 64K >&2
"$PRLDISK" snapshot un >&2
qemu-io -f parallels -c "write -P 11 0 1M" "$(top_of un)" >/dev/null
python3 "$patch" "$(top_of un)" in_use=0x746f6e59
files un > un.before
expect_err "check --repair" "$PRLDISK" snapshot un
files un > un.after
diff un.before un.after >&2 || fail "item 5: a refused snapshot changed the folder"
"$PRLDISK" check --repair un >&2 || fail "item 5: check --repair"
"$PRLDISK" snapshot un >&2 || fail "item 5: snapshot after check --repair"
expect_eq "$(find un -name 'root.hds*' | wc -l)" 3 "item 5: images after the snapshot"
