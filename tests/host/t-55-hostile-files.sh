#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Hostile disk folders, the files a descriptor names (issue 15):
#   item 1: a FIFO in place of an image is refused at once, never waited on
#           (info, check and check --repair used to hang holding the lock);
#   item 6: two layers naming one file (by the same name, another spelling
#           or a hard link) and a <File> naming a reserved file (the
#           descriptor, its lock, its temporary copy) are refused when the
#           descriptor loads; switch used to delete the snapshot switched to,
#           or the descriptor.
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd timeout sha256sum

# run NAME ARGS...: prldisk ARGS under a timeout; its status in $rc, its
# stderr in NAME.err.  A hang is a failure, not a stuck test.
run() {
	local name=$1
	shift
	rc=0
	timeout -k 2 20 "$PRLDISK" "$@" > "$name.out" 2> "$name.err" || rc=$?
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then fail "$name: prldisk $* hangs"; fi
	[ "$rc" -lt 128 ] || fail "$name: prldisk $* died with status $rc"
}
# refused NAME WANT ARGS...: prldisk ARGS fails, saying WANT (on stderr,
# or for info in its listing)
refused() {
	local name=$1 want=$2
	shift 2
	run "$name" "$@"
	[ "$rc" -ne 0 ] || fail "$name: prldisk $* succeeded"
	[ "$1" != info ] || cat "$name.out" >> "$name.err"
	grep -qF -- "$want" "$name.err" ||
		fail "$name: prldisk $*: '$(head -c 300 "$name.err")' does not say '$want'"
	note "$name: refused: $(grep -F -- "$want" "$name.err" | head -n 1)"
}
# files DIR: the folder's names, types and content, to compare
files() {
	(cd "$1" && find . -mindepth 1 -maxdepth 1 -printf '%P %y\n' | LC_ALL=C sort &&
		find . -mindepth 1 -maxdepth 1 \( -type f -o -type l \) -exec sha256sum {} + |
		LC_ALL=C sort)
}

# ---- item 1: a FIFO in place of an image ---------------------------------
note "item 1: a FIFO in place of an image"
"$PRLDISK" create fifo --size 64M >/dev/null
"$PRLDISK" snapshot fifo >/dev/null
top=$(ls fifo/root.hds.*)
rm "$top"
mkfifo "$top"
mkfifo lone.hds
for cmd in "info" "check" "check --repair" "snapshot" "resize --size 128M" \
	"convert --image-format v1" "bitmap list"; do
	# shellcheck disable=SC2086 # the words of $cmd are arguments
	refused "fifo-${cmd// /-}" "$top" $cmd fifo
	grep -qF "not a regular file" "fifo-${cmd// /-}.err" ||
		fail "item 1: $cmd does not say what is wrong with $top"
done
for cmd in "info" "check" "check --repair" "resize --size 128M" \
	"convert --image-format v1" "bitmap list"; do
	# shellcheck disable=SC2086
	refused "lone-${cmd// /-}" "lone.hds" $cmd lone.hds
	grep -qF "not a regular file" "lone-${cmd// /-}.err" ||
		fail "item 1: $cmd of a lone FIFO does not say what is wrong"
done
# The lock was let go: a change goes through once the FIFO is gone.
rm "$top"
"$PRLDISK" create other --size 64M >/dev/null
cp other/root.hds "$top"
"$PRLDISK" check --repair fifo >&2 || fail "item 1: the disk does not check after the FIFO is gone"

# ---- item 6: two layers naming one file, or a reserved name --------------
note "item 6: two layers naming one file, or a reserved file"
# layered NAME FILE: a disk with one snapshot whose top's <File> is FILE
# (the snapshot's file is root.hds); prints the snapshot's GUID
layered() {
	local g
	"$PRLDISK" create "$1" --size 64M >/dev/null
	g=$("$PRLDISK" snapshot --json "$1" | sed -n 's/.*"snapshot": *"\({[^}]*}\)".*/\1/p')
	rm "$1"/root.hds.*
	sed -i "s|<File>root.hds.{[^<]*}</File>|<File>$2</File>|" "$1/DiskDescriptor.xml"
	echo "$g"
}
# hostile NAME WANT: info, check and switch all refuse the disk NAME and
# switch leaves every file of it as it was
hostile() {
	local name=$1 want=$2 g=$3
	files "$name" > "$name.before"
	refused "$name-info" "$want" info "$name"
	refused "$name-check" "$want" check "$name"
	refused "$name-switch" "$want" switch "$name" "$g"
	files "$name" > "$name.after"
	diff "$name.before" "$name.after" >&2 || fail "item 6: $name: switch changed the folder"
}

g=$(layered same root.hds)
hostile same "same file" "$g"
g=$(layered dot ./root.hds)
hostile dot "same file" "$g"
g=$(layered hardlink link.hds)
ln hardlink/root.hds hardlink/link.hds
hostile hardlink "same file" "$g"
g=$(layered symlink sym.hds)
ln -s root.hds symlink/sym.hds
hostile symlink "same file" "$g"
g=$(layered desc DiskDescriptor.xml)
hostile desc "reserved" "$g"
g=$(layered desc2 ./sub/../DiskDescriptor.xml)
mkdir desc2/sub
hostile desc2 "reserved" "$g"
g=$(layered lock DiskDescriptor.xml.lck)
: > lock/DiskDescriptor.xml.lck
hostile lock "reserved" "$g"
g=$(layered tmp DiskDescriptor.xml.tmp)
cp tmp/root.hds tmp/DiskDescriptor.xml.tmp
hostile tmp "reserved" "$g"
# A hard link to the descriptor under another name: the same file.
g=$(layered desclink top.hds)
ln desclink/DiskDescriptor.xml desclink/top.hds
hostile desclink "reserved" "$g"
# Two layers naming one missing file: refused by name.
g=$(layered gone gone.hds)
sed -i "s|<File>root.hds</File>|<File>gone.hds</File>|" gone/DiskDescriptor.xml
rm gone/root.hds
hostile gone "same file" "$g"
