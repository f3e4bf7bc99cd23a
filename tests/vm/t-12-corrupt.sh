#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Corrupted images and bad table lines are refused with a message that names
# the problem; nothing is left behind, the image is not written, and the
# kernel never warns (the harness fails the test on any WARNING/BUG/Oops).
# Then 40 (400 with "long") images with random bytes changed in the header and BAT: each is
# refused cleanly or, if accepted, reads back without an error.
# vm-timeout: 600
set -eu
. "$SRC/tests/vm/lib.sh"

# Base images: v2 by QEMU (64k clusters, data_off 128), v1 by ploop (1M).
qemu-img create -q -f parallels -o cluster_size=64k v2.hds 8M
qemu-io -f parallels -c "write -P 1 0 64k" -c "write -P 2 1M 64k" -c "write -P 3 4M 128k" v2.hds >/dev/null
mkdir p
(cd p && ploop_cmd init -s 16M -t none root.hds >/dev/null 2>&1) || fail "ploop init"
qemu-io -f parallels -c "write -P 4 0 1M" -c "write -P 5 5M 1M" p/root.hds >/dev/null
cp p/root.hds v1.hds
# v2: data_off 128; BAT entries in clusters: 1, 2, 3, 4 (entries 0, 16, 64, 65).
# v1: data_off 2048; BAT entries in sectors: 2048, 4096 (entries 0 and 5).

# Attempts go through one python process (tests/tools/refuse.py): under
# TCG every process start costs ~0.2-1 s, and there are hundreds here.
: > refusals
# refused NAME BASE "MESSAGE" [patch args...]: the image must be refused.
refused() { printf '%s\t' "$@" >> refusals; echo >> refusals; }

refused bad-magic v2.hds "Bad magic: not a Parallels expandable image" magic=WithoutFreeSpacX
refused bad-version v2.hds "Unsupported header version (must be 2)" version=1
refused zero-cluster v2.hds "Cluster size is zero" tracks=0
refused huge-cluster v2.hds "Cluster size too large (maximum 1 GiB)" tracks=0x40000000
refused huge-bat v2.hds "BAT too large (more than 2^28 entries)" bat_entries=0x10000001
refused huge-bat2 v2.hds "BAT too large (more than 2^28 entries)" bat_entries=0xffffffff
refused bat-truncated v2.hds "Image truncated: BAT extends past the end of the image" bat_entries=0x100000
refused size-zero v2.hds "Virtual size is zero" nb_sectors=0
refused size-beyond-bat v2.hds "Virtual size exceeds what the BAT covers" nb_sectors=16385
refused v1-size-high v1.hds "WithoutFreeSpace header with a size above 32 bits" nb_sectors=0x100008000
refused data-off-zero v2.hds "data_off is zero in a WithouFreSpacExt image" data_off=0
refused data-off-unaligned v2.hds "data_off is not a multiple of the cluster size" data_off=130
refused data-off-in-bat2 v1.hds "data_off points inside the header or BAT" data_off=1 bat_entries=200 bat[0]=0 bat[5]=0 nb_sectors=8192
refused data-off-past-end v2.hds "data_off is beyond the end of the image" data_off=0x100000
refused ext-off-bad v2.hds "ext_off does not point at a valid cluster" ext_off=3
refused ext-off-past-end v2.hds "ext_off does not point at a valid cluster" ext_off=0x100000
refused bat-past-end v2.hds "BAT entry points past the end of the image" 'bat[3]=1000'
refused bat-into-header v2.hds "BAT entry points into the header or BAT" data_off=256
refused v1-bat-into-header v1.hds "BAT entry points into the header or BAT" 'bat[3]=8'
refused v1-bat-misaligned v1.hds "BAT entry is not on a cluster boundary" 'bat[3]=3000'
refused bat-duplicate v2.hds "Two BAT entries point at the same cluster" 'bat[7]=3'
refused v1-bat-duplicate v1.hds "Two BAT entries point at the same cluster" 'bat[9]=4096'
refused bat-on-ext v2.hds "BAT entry points at the format extension cluster" ext_off=$((4 * 128))
refused file-truncated v2.hds "BAT entry points past the end of the image" truncate=$((4 * 65536 + 4096))
refused v1-truncated v1.hds "BAT entry points past the end of the image" truncate=$(((2 << 20) + 4096))
refused tiny-file v2.hds "Image device too small to hold a header" truncate=100
n=$(python3 "$SRC/tests/tools/refuse.py" images refusals) || fail "bad images"
note "detail: $(dmesg | grep -F 'BAT entries' | tail -1)"
# The device, then the entries.
dmesg | grep -qE "device-mapper: parallels: [^ ]+: Two BAT entries point at the same cluster: BAT entries 5 and 9 \(sector 4096\)" ||
	fail "device or duplicate entries not named in the log"

# Bad table lines.
l=$(loop_ro v2.hds)
# badtable MESSAGE TABLE: refused with MESSAGE (collected, then run at once).
: > tables
badtable() { printf '%s\t%s\n' "$1" "$2" >> tables; }
badtable "Invalid argument count: need <image_dev> <lower_dev|->" "0 8 parallels $l"
badtable "Unknown optional argument" "0 8 parallels $l - 1 bogus"
badtable "commit_interval_ms must be 1..3600000" "0 8 parallels $l - 1 commit_interval_ms:0"
badtable "Changed block tracking needs a writable table" "0 8 parallels $l - 1 cbt"
badtable "cbt_granularity must be a power of two up to 2^22" "0 8 parallels $l - 1 cbt_granularity:100"
badtable "Invalid number of optional arguments" "0 8 parallels $l - 11 a b c d e f g h i j k"
badtable "The lower device is the image device" "0 8 parallels $l $l"
badtable "Cannot open the image device" "0 8 parallels /dev/nonexistent -"
badtable "Target length exceeds the image's virtual size" "0 16385 parallels $l -"
m=$(python3 "$SRC/tests/tools/refuse.py" tables tables) || fail "bad tables"
n=$((n + m))
note "$n refusals checked"
[ "$n" -ge 35 ] || fail "only $n refusals checked"

# Random damage: refused cleanly, or served in full without an error.
images=40	# t-long-corrupt runs this with "long"
[ "${1-}" != long ] || images=400
python3 "$SRC/tests/tools/refuse.py" random v2.hds "$images" || fail "random damage"
