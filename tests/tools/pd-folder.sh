#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# A Parallels Desktop style disk folder, made from public facts about it:
#   pd-folder.sh DIR [STAMP]
# DIR (named NAME.hdd) gets DiskDescriptor.xml with the elements Parallels
# Desktop adds (sector sizes, Encryption with a Salt, Miscellaneous
# counters), DiskDescriptor.xml.Backup identical to it, an empty NAME.hdd,
# NAME.hdd.drh and the image NAME.hdd.0.{GUID}.hds (qemu-img, 64 MiB,
# 1 MiB clusters; 3 MiB of 0x5a at 0 and 1 MiB of 0xa5 at 20 MiB).  With
# STAMP (e.g. pd17), the image is made v1 "WithoutFreeSpace" as a raw
# image converter for Parallels Desktop does, and STAMP goes at offset 44
# (in_use).  Needs qemu-img, qemu-io, and PRLDISK for STAMP.
set -eu
dir=$1 stamp=${2-}
name=$(basename "$dir" .hdd)
guid="{5fbaabe3-6958-40ff-92a7-860e329aab41}"
img="$name.hdd.0.$guid.hds"
mkdir -p "$dir"
qemu-img create -q -f parallels -o cluster_size=1M "$dir/$img" 64M
qemu-io -f parallels -c "write -P 0x5a 0 3M" -c "write -P 0xa5 20M 1M" \
	"$dir/$img" >/dev/null
if [ -n "$stamp" ]; then
	"$PRLDISK" convert --image-format v1 "$dir/$img" >&2
	printf '%s' "$stamp" | dd of="$dir/$img" bs=1 seek=44 conv=notrunc status=none
fi
: > "$dir/$name.hdd"
head -c 4096 /dev/urandom > "$dir/$name.hdd.drh"
cat > "$dir/DiskDescriptor.xml" <<XML
<?xml version='1.0' encoding='UTF-8'?>
<Parallels_disk_image Version="1.0">
    <Disk_Parameters>
        <Disk_size>131072</Disk_size>
        <Cylinders>130</Cylinders>
        <PhysicalSectorSize>4096</PhysicalSectorSize>
        <LogicSectorSize>512</LogicSectorSize>
        <Heads>16</Heads>
        <Sectors>63</Sectors>
        <Padding>0</Padding>
        <Encryption>
            <Engine>{00000000-0000-0000-0000-000000000000}</Engine>
            <Data></Data>
            <Salt>q8Xz3+Lw</Salt>
        </Encryption>
        <UID>{c5a2d7a6-6ab3-4b47-9c8e-3b0b5e1b8f11}</UID>
        <Name>$name</Name>
        <Miscellaneous>
            <CompatLevel>level2</CompatLevel>
            <Bootable>1</Bootable>
            <SuspendState>0</SuspendState>
            <DupBlocksCnt>0</DupBlocksCnt>
            <ChangeState>0</ChangeState>
            <GuestToolsVersion>19.1.0</GuestToolsVersion>
        </Miscellaneous>
    </Disk_Parameters>
    <StorageData>
        <Storage>
            <Start>0</Start>
            <End>131072</End>
            <Blocksize>2048</Blocksize>
            <Image>
                <GUID>$guid</GUID>
                <Type>Compressed</Type>
                <File>$img</File>
            </Image>
        </Storage>
    </StorageData>
    <Snapshots>
        <TopGUID>$guid</TopGUID>
        <Shot>
            <GUID>$guid</GUID>
            <ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID>
        </Shot>
    </Snapshots>
</Parallels_disk_image>
XML
cp -p "$dir/DiskDescriptor.xml" "$dir/DiskDescriptor.xml.Backup"
