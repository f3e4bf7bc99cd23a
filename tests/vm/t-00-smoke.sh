#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Smoke test of the VM harness: the right kernel runs, dm-parallels is
# loaded, device-mapper works without udev, loop and dm devices can be made,
# read and removed, and the lib.sh helpers behave.  Runs first.
# vm-timeout: 120
set -eu
. "$SRC/tests/vm/lib.sh"

expect_eq "$(uname -r)" "$KVER" "running kernel"
expect_eq "$PWD" "$T" "working directory"
expect_eq "$TMPDIR" /tmp TMPDIR
expect_eq "${DM_DISABLE_UDEV-}" 1 DM_DISABLE_UDEV
[ -d /sys/module/dm_parallels ] || fail "dm-parallels.ko is not loaded"
dmsetup targets | grep -q '^parallels ' ||
	fail "device-mapper does not list the 'parallels' target"

# A dm-linear over a dm-zero device reads zeros.
dm_create smoke-zero "0 8192 zero"
dm_create smoke-lin "0 8192 linear /dev/mapper/smoke-zero 0"
cmp -n $((8192 * 512)) /dev/mapper/smoke-lin /dev/zero || fail "dm-linear over zero"

# A read-only loop device over a file, through dm-linear: same bytes, and
# writes are refused.
head -c $((4 << 20)) /dev/urandom > data
l=$(loop_ro data)
expect_eq "$(losetup -n -O DIO "$l" | tr -d ' ')" 1 "direct I/O on $l (is /tmp ext4?)"
dm_create smoke-loop "0 8192 linear $l 0" --readonly
cmp /dev/mapper/smoke-loop data || fail "dm-linear over loop reads other data"
expect_fail dd if=/dev/zero of=/dev/mapper/smoke-loop bs=4k count=1 oflag=direct status=none
expect_fail dm_create smoke-bad "0 8 no-such-target"

# An empty Parallels image made by QEMU reads as zeros through the target.
qemu-img create -q -f parallels img.hds 16M
li=$(loop_ro img.hds)
dm_create smoke-prl "0 32768 parallels $li -" --readonly
cmp -n $((16 << 20)) /dev/mapper/smoke-prl /dev/zero || fail "empty image does not read zeros"

# The target refuses random bytes, and says why in the kernel log.
dmesg_mark
expect_fail dmsetup create smoke-prl-bad --readonly --table "0 8192 parallels $l -"
dmesg_since_mark | grep 'parallels' || fail "no kernel message for the refused table"

# Debian's ploop runs here (it needs lib.sh's padded environment).
mkdir p
ploop_cmd init -s 16M -t none p/root.hds > ploop.out 2>&1 || { cat ploop.out; fail "ploop init"; }
[ -s p/DiskDescriptor.xml ] || fail "ploop made no DiskDescriptor.xml"

# Top-down removal of what dm_create made; loops go at exit.
dm_remove_all
for d in smoke-zero smoke-lin smoke-loop smoke-prl; do
	! dmsetup info "$d" >/dev/null 2>&1 || fail "$d still exists"
done
note "harness smoke test passed"
