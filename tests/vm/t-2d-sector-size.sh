#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Sector sizes (issue 16): the table args logical_block_size:<bytes> and
# physical_block_size:<bytes>, and DiskDescriptor.xml's LogicSectorSize /
# PhysicalSectorSize that prldisk passes in them.
#   args:     dmsetup create with them -> /sys/block/dm-N/queue/{logical,
#             physical}_block_size as asked, dmsetup table gives them back,
#             data written reads back (4096-byte logical: a 512-byte direct
#             read is refused, as on a 4Kn disk);
#   bad:      0, 256, 3000, 8192, a word, physical below logical, a length
#             that is no whole number of logical blocks: refused, with the
#             target's message in the kernel log;
#   none:     without them, the device has the image device's sizes and the
#             table line is as before;
#   activate: a Parallels Desktop style descriptor (Physical 4096, Logic
#             512) over a two-image chain: the top and the layer below
#             report 512/4096, the data reads as qemu-img's view; an online
#             snapshot's new layer agrees; a descriptor without them gives
#             512-byte sectors; one with Logic 4096 gives 4096/4096.
# vm-timeout: 300
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd qemu-img qemu-io python3 dmsetup losetup

P=$SRC/userspace/prldisk
[ -x "$P" ] || fail "$P is not built (make -C userspace prldisk)"
TOPG='{5fbaabe3-6958-40ff-92a7-860e329aab41}'
at_exit "cd / && for n in pd pl p4; do $P deactivate \$n >/dev/null 2>&1; done"

# sizes DEV: "<logical> <physical>" of a dm device (name) or a block device
sizes() {
	case $1 in
	/dev/*) _k=${1#/dev/} ;;
	*) _k=$(dmsetup info -c --noheadings -o blkdevname "$1") ;;
	esac
	echo "$(cat "/sys/block/$_k/queue/logical_block_size") $(cat "/sys/block/$_k/queue/physical_block_size")"
}
args() { dmsetup table "$1" | cut -d' ' -f6-; }

qemu-img create -q -f parallels -o cluster_size=64k a.hds 32M
qemu-io -f parallels -c "write -P 0x5a 0 1M" -c "write -P 0x33 5M 64k" a.hds >/dev/null
qemu-img convert -f parallels -O raw a.hds a.raw
cp a.hds a0.hds
L=$(loop_rw a.hds)
note "image loop device: $(sizes "$L")"

case_args() {
	dm_create s1 "0 65536 parallels $L - 2 logical_block_size:512 physical_block_size:4096"
	expect_eq "$(sizes s1)" "512 4096" "sizes of s1"
	expect_eq "$(args s1)" "2 logical_block_size:512 physical_block_size:4096" "table of s1"
	cmp /dev/mapper/s1 a.raw || fail "s1 reads other data than qemu-img"
	dm_remove s1
	# Logical alone: physical follows it.
	dm_create s2 "0 65536 parallels $L - 1 logical_block_size:4096"
	expect_eq "$(sizes s2)" "4096 4096" "sizes of s2"
	expect_eq "$(args s2)" "1 logical_block_size:4096" "table of s2"
	# (into clusters the image has: the loop device is not pre-extended)
	head -c 8192 /dev/urandom > w.bin
	dd if=w.bin of=/dev/mapper/s2 bs=4096 seek=100 oflag=direct conv=fsync status=none
	cmp w.bin <(dd if=/dev/mapper/s2 bs=4096 skip=100 count=2 iflag=direct status=none) ||
		fail "4096-byte blocks do not read back from s2"
	expect_err 'Invalid argument' dd if=/dev/mapper/s2 of=/dev/null bs=512 count=1 skip=1 iflag=direct status=none
	# Round trip: the table line dmsetup gives back loads again.
	dmsetup table s2 | dmsetup load s2
	dmsetup resume s2
	expect_eq "$(sizes s2)" "4096 4096" "sizes of s2 reloaded"
	dm_remove s2
	qemu-img check -q -f parallels a.hds || fail "qemu-img check after the 4096-byte writes"
	cp a0.hds a.hds
}

# refused WHAT TABLE-ARGS [LEN]: dmsetup create fails, the kernel says WHAT
refused() {
	dmesg_mark
	if dmsetup create bad --table "0 ${3:-65536} parallels $L - $2" 2> bad.err; then
		dm_remove bad
		fail "accepted: $2"
	fi
	dmesg_since_mark | grep -qF "$1" ||
		fail "refused '$2' without '$1' in the kernel log: $(dmesg_since_mark | tail -n 3)"
	note "refused as expected: $2: $(dmesg_since_mark | grep -F "$1" | head -n 1)"
}

case_bad() {
	refused "logical_block_size must be 512, 1024, 2048 or 4096" "1 logical_block_size:0"
	refused "logical_block_size must be 512, 1024, 2048 or 4096" "1 logical_block_size:256"
	refused "logical_block_size must be 512, 1024, 2048 or 4096" "1 logical_block_size:3000"
	refused "logical_block_size must be 512, 1024, 2048 or 4096" "1 logical_block_size:8192"
	refused "physical_block_size must be 512, 1024, 2048 or 4096" "1 physical_block_size:8192"
	refused "physical_block_size must be 512, 1024, 2048 or 4096" "1 physical_block_size:1536"
	refused "Unknown optional argument" "1 logical_block_size:4k"
	refused "physical_block_size is smaller than logical_block_size" \
		"2 logical_block_size:4096 physical_block_size:512"
	refused "Target length is not a multiple of logical_block_size" "1 logical_block_size:4096" 65535
	_d=$(dmsetup ls | grep -v '^No devices found' || true)
	[ -z "$_d" ] || fail "a refused table left a device: $_d"
}

case_none() {
	dm_create s3 "0 65536 parallels $L -"
	expect_eq "$(sizes s3)" "$(sizes "$L")" "sizes without the args"
	expect_eq "$(args s3)" "" "table without the args"
	cmp /dev/mapper/s3 a.raw || fail "s3 reads other data than qemu-img"
	dm_remove s3
}

# pd_disk DIR LOGIC PHYSICAL: a descriptor for DIR/root.hds <- DIR/top.hds
# with the sector size elements (none when LOGIC is -)
pd_disk() {
	mkdir "$1"
	qemu-img create -q -f parallels -o cluster_size=1M "$1/root.hds" 64M
	qemu-io -f parallels -c "write -P 0x11 0 3M" -c "write -P 0x12 40M 1M" "$1/root.hds" >/dev/null
	qemu-img create -q -f parallels -o cluster_size=1M "$1/top.hds" 64M
	qemu-io --image-opts -c "write -P 0x21 1M 1M" -c "write -P 0x22 63M 4k" \
		"driver=parallels,file.filename=$T/$1/top.hds,backing.driver=parallels,backing.file.filename=$T/$1/root.hds" >/dev/null
	_ss=''
	[ "$2" = - ] || _ss="<PhysicalSectorSize>$3</PhysicalSectorSize>
        <LogicSectorSize>$2</LogicSectorSize>"
	cat > "$1/DiskDescriptor.xml" <<XML
<?xml version='1.0' encoding='UTF-8'?>
<Parallels_disk_image Version="1.0">
    <Disk_Parameters>
        <Disk_size>131072</Disk_size>
        <Cylinders>130</Cylinders>
        $_ss
        <Heads>16</Heads>
        <Sectors>63</Sectors>
        <Padding>0</Padding>
    </Disk_Parameters>
    <StorageData>
        <Storage>
            <Start>0</Start>
            <End>131072</End>
            <Blocksize>2048</Blocksize>
            <Image>
                <GUID>{aaaaaaaa-0000-4000-8000-000000000001}</GUID>
                <Type>Compressed</Type>
                <File>root.hds</File>
            </Image>
            <Image>
                <GUID>$TOPG</GUID>
                <Type>Compressed</Type>
                <File>top.hds</File>
            </Image>
        </Storage>
    </StorageData>
    <Snapshots>
        <TopGUID>$TOPG</TopGUID>
        <Shot>
            <GUID>{aaaaaaaa-0000-4000-8000-000000000001}</GUID>
            <ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID>
        </Shot>
        <Shot>
            <GUID>$TOPG</GUID>
            <ParentGUID>{aaaaaaaa-0000-4000-8000-000000000001}</ParentGUID>
        </Shot>
    </Snapshots>
</Parallels_disk_image>
XML
	qemu-img convert -O raw --image-opts \
		"driver=parallels,file.filename=$T/$1/top.hds,backing.driver=parallels,backing.file.filename=$T/$1/root.hds" \
		"$1.raw"
}

LAYER=pd-aaaaaaaa-0000-4000-8000-000000000001

case_activate() {
	pd_disk pd 512 4096
	$P activate pd --name pd > /dev/null
	expect_eq "$(sizes pd)" "512 4096" "sizes of the top"
	expect_eq "$(sizes "$LAYER")" "512 4096" "sizes of the layer below"
	expect_eq "$(args pd)" "2 logical_block_size:512 physical_block_size:4096" "table of the top"
	expect_eq "$(args "$LAYER")" "2 logical_block_size:512 physical_block_size:4096" "table of the layer"
	cmp /dev/mapper/pd pd.raw || fail "the top reads other data than qemu-img"
	# An online snapshot: the old top becomes a layer, which agrees.
	$P snapshot pd > /dev/null
	for n in $(dmsetup ls | awk '$1 ~ /^pd-/ { print $1 }'); do
		expect_eq "$(sizes "$n")" "512 4096" "sizes of $n after the online snapshot"
	done
	expect_eq "$(sizes pd)" "512 4096" "sizes of the top after the online snapshot"
	cmp /dev/mapper/pd pd.raw || fail "the top reads other data after the online snapshot"
	dd if=/dev/urandom of=/dev/mapper/pd bs=4k count=4 seek=100 oflag=direct conv=fsync status=none
	dd if=/dev/mapper/pd of=pd.raw bs=4k count=4 skip=100 seek=100 conv=notrunc iflag=direct status=none
	$P deactivate pd
	$P check pd > /dev/null || fail "prldisk check after the writes"
	$P activate pd --name pd > /dev/null
	cmp /dev/mapper/pd pd.raw || fail "the data written does not read back"
	$P deactivate pd
}

case_plain_sectors() {
	pd_disk pl - -
	$P activate pl --name pl > /dev/null
	expect_eq "$(args pl)" "" "table of a disk without sector sizes"
	expect_eq "$(sizes pl)" "$(sizes "$L")" "sizes of a disk without sector sizes"
	cmp /dev/mapper/pl pl.raw || fail "pl reads other data than qemu-img"
	$P deactivate pl
}

case_4kn() {
	pd_disk p4 4096 4096
	$P activate p4 --name p4 > /dev/null
	expect_eq "$(sizes p4)" "4096 4096" "sizes of a 4Kn disk"
	cmp /dev/mapper/p4 p4.raw || fail "p4 reads other data than qemu-img"
	$P deactivate p4
}

run_case args
run_case bad
run_case none
run_case activate
run_case plain_sectors
run_case 4kn
cases_done
