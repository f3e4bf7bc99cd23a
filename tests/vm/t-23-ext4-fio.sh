#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Real use of a writable table: ext4 (mkfs, mount, copy a tree, umount,
# e2fsck -fn, remove, re-create, mount, every file's checksum verified),
# then fio with crc32c verify (4 jobs, iodepth 8, mixed random read/write,
# 4k..256k) over a 1 GiB image, which qemu-img check accepts afterwards.
# vm-timeout: 900
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd fio mkfs.ext4 e2fsck
# t-long-ext4-fio runs this with "long": more files, more fio I/O.
tree="/usr/share/perl5 /usr/include/linux" io=6M
[ "${1-}" != long ] || tree="$tree /usr/lib/python3/dist-packages" io=64M

# ext4 on a fresh 512 MiB image with 1 MiB clusters.
qemu-img create -q -f parallels fs.hds 512M
truncate -s 1G fs.hds
l=$(loop_rw fs.hds)
dm_create fs "0 $((512 << 11)) parallels $l -"
mkfs.ext4 -q /dev/mapper/fs
mkdir -p mnt
mount /dev/mapper/fs mnt
# shellcheck disable=SC2086
cp -a $tree mnt/
(cd mnt && find . -type f -print0 | sort -z | xargs -0 sha256sum) > sums
files=$(wc -l < sums)
[ "$files" -gt 900 ] || fail "only $files files copied"
umount mnt
e2fsck -fn /dev/mapper/fs || fail "e2fsck after copy"
end=$(dmsetup status fs | awk '{ print $6 }')
dm_remove fs
losetup -d "$l"
truncate -s $((end * 512)) fs.hds
qemu-img check -q -f parallels fs.hds || fail "qemu-img check of the ext4 image"
l=$(loop_rw fs.hds)
dm_create fs "0 $((512 << 11)) parallels $l -"
mount /dev/mapper/fs mnt
(cd mnt && sha256sum --quiet -c ../sums) || fail "files differ after re-activation"
umount mnt
dm_remove fs
losetup -d "$l"
note "ext4: $files files verified; image end $((end / 2048)) MiB"

# fio with verify over a 1 GiB image (64k clusters).
qemu-img create -q -f parallels -o cluster_size=64k fio.hds 1G
truncate -s 2G fio.hds
l=$(loop_rw fio.hds)
dm_create fio "0 $((1 << 21)) parallels $l -"
fio --name=verify --filename=/dev/mapper/fio --ioengine=libaio --direct=1 \
	--rw=randrw --bsrange=4k-256k --numjobs=4 --iodepth=8 --size=256M \
	--offset_increment=256M --io_size=$io --verify=crc32c --verify_fatal=1 \
	--do_verify=1 --randseed=42 --group_reporting --output-format=terse \
	> fio.out || fail "fio verify failed: $(tail -5 fio.out)"
end=$(dmsetup status fio | awk '{ print $6 }')
dm_remove fio
losetup -d "$l"
truncate -s $((end * 512)) fio.hds
qemu-img check -q -f parallels fio.hds || rc=$?
[ "${rc:-0}" -eq 0 ] || [ "${rc:-0}" -eq 3 ] || fail "qemu-img check after fio: ${rc:-0}"
note "fio verify ok"
