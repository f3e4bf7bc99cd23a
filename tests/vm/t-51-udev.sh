#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# With udev running (every other test runs without it): prldisk activate
# and deactivate synchronise with udev through libdevmapper's cookies (they
# return, with no timeout, once the dm rules ran), the by-prldisk link of
# 60-prldisk.rules names the top and only the top, and deactivate removes
# it.  udevd is started here from Debian's own rules plus ours, and stopped
# at the end.
# vm-timeout: 240
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd udevadm
[ -x /lib/systemd/systemd-udevd ] || skip "no systemd-udevd"
[ -e /lib/udev/rules.d/95-dm-notify.rules ] || skip "no device-mapper udev rules"
P=$SRC/userspace/prldisk
unset DM_DISABLE_UDEV
export SYSTEMD_IGNORE_CHROOT=1	# the guest runs tests in a chroot

mkdir -p /run/udev/rules.d
cp "$SRC/userspace/system/60-prldisk.rules" /run/udev/rules.d/
/lib/systemd/systemd-udevd --daemon --resolve-names=never 2> udevd.err ||
	fail "systemd-udevd did not start: $(cat udevd.err)"
at_exit "udevadm control --exit 2>/dev/null || pkill -x systemd-udevd || :; rm -f /run/udev/rules.d/60-prldisk.rules"
udevadm settle --timeout=30

$P create disk --size 64M > /dev/null
$P snapshot disk > /dev/null
timeout 60 $P activate disk > dev.txt 2> act.err || fail "activate under udev: $(cat act.err)"
at_exit "cd / && $P deactivate disk >/dev/null 2>&1"
expect_eq "$(cat dev.txt)" /dev/mapper/disk "device path"
# udev's dm rules made the node (a link to ../dm-N): libdevmapper left it
# to them, as it does only when it synchronises with udev.
[ -L /dev/mapper/disk ] || fail "/dev/mapper/disk is not udev's link: $(ls -l /dev/mapper/disk)"
grep -qi 'udev\|cookie\|semaphore' act.err && fail "activate warned about udev: $(cat act.err)"
udevadm settle --timeout=30
link=/dev/disk/by-prldisk/disk
[ -L "$link" ] || fail "no $link (by-prldisk: $(ls /dev/disk/by-prldisk 2>&1))"
expect_eq "$(readlink -f "$link")" "$(readlink -f /dev/mapper/disk)" "the link names the top"
expect_eq "$(find /dev/disk/by-prldisk -mindepth 1 | wc -l)" 1 "links: the top only"
dd if=/dev/urandom of=w.bin bs=64k count=4 status=none
dd if=w.bin of="$link" bs=64k seek=10 oflag=direct status=none
cmp w.bin <(dd if=/dev/mapper/disk bs=64k skip=10 count=4 iflag=direct status=none) ||
	fail "data written through the link does not read back"

(cd / && timeout 60 $P deactivate disk) > /dev/null 2> deact.err ||
	fail "deactivate under udev: $(cat deact.err)"
udevadm settle --timeout=30
[ ! -e "$link" ] || fail "$link left after deactivate"
nothing_left
udevadm control --exit
for _ in 1 2 3 4 5 6 7 8 9 10; do pgrep -x systemd-udevd > /dev/null || break; sleep 0.5; done
pgrep -x systemd-udevd > /dev/null && fail "systemd-udevd still runs"
note "ok"
