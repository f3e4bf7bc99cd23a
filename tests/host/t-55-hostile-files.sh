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
#           or the descriptor;
#   item 9: every file operation resolves beneath the disk folder from one
#           handle: a subfolder swapped for a symlink while switch runs
#           used to make its unlink delete a file outside the folder;
#           a symlink inside the folder is refused when the descriptor loads;
#   item 10: a DiskDescriptor.xml that is a symlink is resolved once and
#           locked beside the real file (snapshot used to rewrite the other
#           disk while its lock was held);
#   item 11: activate and deactivate take the lock before reading;
#   item 12: file names stay short under any number of rotations (snapshot,
#           delete the oldest): names used to grow by a GUID every second
#           round, until "File name too long";
#   item 13: owner, group and mode of the descriptor and the images are
#           kept by every change (root used to take them over).
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
hostile symlink "symbolic link" "$g"
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

# ---- item 9: a subfolder swapped for a symlink mid-command ---------------
note "item 9: a subfolder swapped for a symlink while switch runs"
require_cmd strace
"$PRLDISK" create swap --size 64M >/dev/null
g=$("$PRLDISK" snapshot --json swap | sed -n 's/.*"snapshot": *"\({[^}]*}\)".*/\1/p')
top=$(cd swap && ls root.hds.*)
mkdir swap/sub outside
mv "swap/$top" swap/sub/
sed -i "s|<File>$top</File>|<File>sub/$top</File>|" swap/DiskDescriptor.xml
echo precious > "outside/$top"
# strace holds every unlink for 2 s; once the new descriptor is in place
# (the old top's unlink comes next), sub becomes a symlink out.
(for _ in $(seq 200); do
	grep -qF "sub/$top" swap/DiskDescriptor.xml || break
	sleep 0.05
done
mv swap/sub swap/sub.moved && ln -s "$T/outside" swap/sub) &
rc=0
strace -f -o /dev/null -e trace=unlink,unlinkat \
	-e inject=unlink,unlinkat:delay_enter=2000000 \
	"$PRLDISK" switch swap "$g" > swap.out 2> swap.err || rc=$?
wait
note "switch: status $rc: $(head -c 300 swap.err)"
[ -f "outside/$top" ] ||
	fail "item 9: switch deleted $T/outside/$top, outside the disk folder, through the swapped-in symlink"
# The old top goes from the folder held, or switch says it could not.
[ ! -e "swap/sub.moved/$top" ] || grep -qF "could not remove" swap.err ||
	fail "item 9: switch left the old top and did not say so"
# A symlink inside the folder is refused at load, even one that stays inside.
mkdir swap/real
mv swap/root.hds swap/real/
ln -s real swap/link
sed -i "s|<File>root.hds</File>|<File>link/root.hds</File>|" swap/DiskDescriptor.xml
refused swap-link "symbolic link" info swap

# ---- item 10: a descriptor that is a symlink -----------------------------
note "item 10: DiskDescriptor.xml a symlink to another disk's"
"$PRLDISK" create victim --size 64M >/dev/null
mkdir sym
ln -s ../victim/DiskDescriptor.xml sym/DiskDescriptor.xml
exec 8> victim/DiskDescriptor.xml.lck
flock 8
files victim > victim.before
refused sym-locked "is locked" snapshot sym
exec 8>&-
files victim > victim.after
diff victim.before victim.after >&2 ||
	fail "item 10: snapshot through the symlink changed the other disk while its lock was held"
[ ! -e sym/DiskDescriptor.xml.lck ] ||
	fail "item 10: the lock was taken beside the symlink, not beside the real descriptor"
# Unlocked, it is the other disk's own change, made in its folder.
"$PRLDISK" snapshot sym >/dev/null
[ "$(find victim -name 'root.hds.*' | wc -l)" -eq 1 ] ||
	fail "item 10: the snapshot through the symlink did not land in the real folder"
[ "$(find sym -mindepth 1 ! -name DiskDescriptor.xml | wc -l)" -eq 0 ] ||
	fail "item 10: files were made beside the symlink: $(ls sym)"

# ---- item 11: the lock before the read -----------------------------------
note "item 11: activate and deactivate lock before they read"
exec 8> victim/DiskDescriptor.xml.lck
flock 8
for cmd in activate deactivate; do
	rc=0
	strace -f -o "$cmd.trace" -e trace=open,openat,openat2,flock \
		"$PRLDISK" "$cmd" victim > "$cmd.out" 2> "$cmd.err" || rc=$?
	[ "$rc" -ne 0 ] || fail "item 11: $cmd succeeded while the disk was locked"
	grep -qF "is locked" "$cmd.err" || fail "item 11: $cmd: '$(cat "$cmd.err")'"
	if grep -E 'DiskDescriptor\.xml"' "$cmd.trace" >&2; then
		fail "item 11: $cmd read the descriptor before it had the lock"
	fi
done
exec 8>&-

# ---- item 12: names across rotations -------------------------------------
note "item 12: ten rounds of snapshot, then delete the oldest"
"$PRLDISK" create rot --size 64M >/dev/null
prev=
for i in $(seq 1 10); do
	s=$("$PRLDISK" snapshot --json rot) ||
		fail "item 12: round $i: snapshot failed: $(find rot -printf '%f\n' | awk '{ print length($0) }' | sort -n | tail -n 1)-byte names"
	s=$(echo "$s" | sed -n 's/.*"snapshot": *"\({[^}]*}\)".*/\1/p')
	if [ -n "$prev" ]; then
		"$PRLDISK" snapshot-delete rot "$prev" >/dev/null ||
			fail "item 12: round $i: snapshot-delete failed"
	fi
	prev=$s
done
# shellcheck disable=SC2010 # plain names, no newlines
ls rot | grep -Evx 'DiskDescriptor\.xml(\.lck)?|root\.hds(\.\{[0-9a-f-]{36}\})?' >&2 &&
	fail "item 12: names grew across rotations"
"$PRLDISK" check rot >&2 || fail "item 12: the rotated disk does not check"

# ---- item 13: owner and mode kept ----------------------------------------
note "item 13: owner, group and mode of the disk's files kept"
[ "$(id -u)" -eq 0 ] || skip "item 13 needs root to give files away"
"$PRLDISK" create own --size 64M >/dev/null
chown -R 1234:2345 own
chmod 0640 own/DiskDescriptor.xml own/root.hds
# owners: each file of own/ but the lock with its owner and mode
owners() {
	find own -type f ! -name '*.lck' -printf '%f %u:%g %m\n' | sort
}
for cmd in "snapshot" "resize --size 128M" "convert --image-format v1"; do
	# shellcheck disable=SC2086 # the words of $cmd are arguments
	"$PRLDISK" $cmd own >/dev/null || fail "item 13: $cmd failed"
	if owners | grep -v ' 1234:2345 640$' >&2; then
		fail "item 13: after $cmd these files have another owner or mode"
	fi
done
note "all hostile-file cases refused"
