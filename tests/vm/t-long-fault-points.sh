#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# prldisk killed (PRLDISK_FAULT=<point>: SIGKILL right after that step) at
# every step of activate, deactivate, online snapshot, resize and
# snapshot-delete.  After each kill:
# prldisk deactivate, then activate, succeed; the disk reads what was
# written and flushed before (checked through the device and through QEMU's
# reading of the descriptor's chain); after the final deactivate no dm or
# loop device is left, every image of the descriptor passes qemu-img check
# and its file is cut back to its image end.  In make check-long only (~400 s
# under TCG): make check keeps within CI's time.
# vm-timeout: 900
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img python3 dmsetup losetup

P=$SRC/userspace/prldisk
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"
chain() { python3 "$SRC/tests/tools/chain.py" "$@"; }
at_exit "cd / && $P deactivate f >/dev/null 2>&1"
# The images the descriptor names.
images() {
	python3 - "$X" <<'EOF'
import os, sys, xml.etree.ElementTree as ET
d = os.path.dirname(os.path.abspath(sys.argv[1]))
for im in ET.parse(sys.argv[1]).getroot().iter('Image'):
    print(os.path.join(d, im.findtext('File').strip()))
EOF
}

$P create f --size 32M --cluster-size 64K > /dev/null
X=$T/f/DiskDescriptor.xml
truncate -s 32M ref.raw
n=0
# write_some: a flushed 64k write through the device, kept in ref.raw too.
write_some() {
	n=$((n + 1))
	off=$(( (n * 7919) % 500 ))
	head -c 65536 /dev/urandom > blk
	dd if=blk of=/dev/mapper/f bs=64k seek=$off oflag=direct conv=fsync status=none
	dd if=blk of=ref.raw bs=64k seek=$off conv=notrunc status=none
}
# killed POINT CMD...: CMD must die by SIGKILL at POINT.
killed() {
	_p=$1
	shift
	rc=0
	PRLDISK_FAULT=$_p "$@" > /dev/null 2> fault.err || rc=$?
	expect_eq "$rc" 137 "exit status of $* killed at $_p ($(cat fault.err))"
}
# recover WHAT [full]: deactivate, activate, the same data, deactivate clean;
# with full also QEMU's reading and every image checked.
recover() {
	(cd / && $P deactivate "$X") > /dev/null 2> rec.err ||
		fail "$1: deactivate after the kill: $(cat rec.err)"
	nothing_left "$1: after deactivate"
	$P activate "$X" > /dev/null 2> rec.err || fail "$1: activate after the kill: $(cat rec.err)"
	cmp /dev/mapper/f ref.raw || fail "$1: data differ after the kill"
	(cd / && $P deactivate "$X") > /dev/null
	nothing_left "$1: at the end"
	# QEMU's view and the images' state: where the stack changed (TCG time).
	[ "${2-}" = full ] || return 0
	chain flat "$X" qemu.raw
	cmp qemu.raw ref.raw || fail "$1: QEMU reads other data"
	for f in $(images); do
		qemu-img check -q -f parallels "$f" || fail "$1: qemu-img check $f"
		expect_eq "$(stat -c %s "$f")" "$($P info --json "$f" |
			python3 -c 'import json,sys; print(json.load(sys.stdin)["image_end"])')" \
			"$1: size of $f"
	done
}
t0=$(date +%s)

for p in extend loops layer top; do
	$P activate "$X" > /dev/null
	write_some
	(cd / && $P deactivate "$X") > /dev/null
	killed "activate:$p" $P activate "$X"
	recover "activate:$p" "$([ $p != top ] || echo full)"
done
note "activate points ok ($(($(date +%s) - t0)) s)"

for p in suspend top truncate; do
	$P activate "$X" > /dev/null
	write_some
	killed "deactivate:$p" sh -c "cd / && exec $P deactivate '$X'"
	recover "deactivate:$p" "$([ $p != truncate ] || echo full)"
done
note "deactivate points ok ($(($(date +%s) - t0)) s)"

for p in file suspend bitmap layer load descriptor resume truncate; do
	layers=$(images | wc -l)
	$P activate "$X" > /dev/null
	write_some
	killed "snapshot:$p" $P snapshot "$X"
	case $p in
	descriptor|resume|truncate) want=$((layers + 1)) ;;
	*) want=$layers ;;
	esac
	expect_eq "$(images | wc -l)" "$want" "snapshot:$p: images in the descriptor"
	recover "snapshot:$p" full
done
note "snapshot points ok ($(($(date +%s) - t0)) s)"

info() { $P info --json "$X" | python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
for p in suspend grow load descriptor resume; do
	$P activate "$X" > /dev/null
	write_some
	s=$(info 'd["virtual_size"]')
	killed "resize:$p" $P resize "$X" --size $(((s >> 20) + 1))M
	case $p in
	descriptor|resume) want=$((s + 1048576)) ;;
	*) want=$s ;;
	esac
	expect_eq "$(info 'd["virtual_size"]')" "$want" "resize:$p: disk size"
	truncate -s "$want" ref.raw
	recover "resize:$p" full
done
note "resize points ok ($(($(date +%s) - t0)) s)"

for p in children suspend fill load descriptor resume remove; do
	$P activate "$X" > /dev/null
	write_some
	$P snapshot "$X" > /dev/null
	write_some
	victim=$(info '[i["parent"] for i in d["images"] if i["top"]][0]')
	layers=$(images | wc -l)
	killed "delete:$p" $P snapshot-delete "$X" "$victim"
	case $p in
	descriptor|resume|remove) want=$((layers - 1)) ;;
	*) want=$layers ;;
	esac
	expect_eq "$(images | wc -l)" "$want" "delete:$p: images in the descriptor"
	recover "delete:$p" full
done
note "snapshot-delete points ok ($(($(date +%s) - t0)) s)"

# And one that is not killed, on the stack the kills left.
$P activate "$X" > /dev/null
write_some
$P snapshot "$X" > /dev/null
write_some
$P status f | sed 's/^/# /' >&2
recover "plain snapshot" full
note "ok: $(images | wc -l) images ($(($(date +%s) - t0)) s)"
