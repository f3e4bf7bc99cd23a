#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# mkcorpus.sh OUTDIR: seed images for tests/fuzz/fuzz_prl_format.c, each
# under 4 KiB.  Crafted ones always; ones written by QEMU (an independent
# implementation) when qemu-img and qemu-io are on PATH.
set -eu
out=$1
mkdir -p "$out"
cd "$out"

le32() {
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 & 255)) \
		$((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)))"
}
le64() { le32 $(($1 & 0xffffffff)); le32 $((($1 >> 32) & 0xffffffff)); }

# hdr MAGIC TRACKS BAT_ENTRIES NB_SECTORS IN_USE DATA_OFF FLAGS EXT_OFF
hdr() {
	printf %s "$1"; le32 2; le32 16; le32 32; le32 "$2"; le32 "$3"
	le64 "$4"; le32 "$5"; le32 "$6"; le32 "$7"; le64 "$8"
}
# img FILE SECTORS HEADER-ARGS... -- BAT-ENTRIES...
img() {
	local f=$1 sectors=$2
	shift 2
	local h=()
	while [ "$1" != -- ]; do h+=("$1"); shift; done
	shift
	{ hdr "${h[@]}"; for e in "$@"; do le32 "$e"; done; } > "$f"
	truncate -s $((sectors * 512)) "$f"
}
V1=WithoutFreeSpace V2=WithouFreSpacExt
OPEN=0x746F6E59 CLOSED=0x312e3276

# v1, data_off 0 (= 1 sector after a 96-byte BAT), 1-sector clusters.
img v1-doff0-cs1 5 $V1 1 8 8 0 0 0 0 -- 3 0 1 0 0 0 0 4
# v1, data_off 2, clusters of 3 sectors, open, Empty flag set.
img v1-doff2-cs3 8 $V1 3 4 10 $OPEN 2 1 0 -- 5 0 2 0
# v2, 2-sector clusters, format extension cluster at 6, closed v2.1.
img v2-ext 8 $V2 2 4 7 $CLOSED 2 0 6 -- 2 0 0 1
printf '\x87\xea\xdc\x23\xef\x4c\x23\xab' | dd of=v2-ext bs=512 seek=6 conv=notrunc status=none
# v2, 4 KiB clusters, nothing allocated.
img v2-empty-4k 8 $V2 8 16 128 0 8 0 0 --

if command -v qemu-img > /dev/null && command -v qemu-io > /dev/null; then
	# qemu NAME CLUSTER SIZE [v1] -- WRITES ("OFF LEN" each)
	qemu() {
		local f=qemu-$1 cs=$2 size=$3 v1=
		shift 3
		[ "$1" = v1 ] && { v1=1; shift; }
		shift
		qemu-img create -q -f parallels -o cluster_size="$cs" "$f" "$size"
		[ -z "$v1" ] || printf %s "$V1" | dd of="$f" conv=notrunc status=none
		local p=171 w
		for w in "$@"; do
			qemu-io -f parallels -c "write -P $p $w" "$f" > /dev/null
			p=$((p + 1))
		done
		[ "$(stat -c %s "$f")" -le 4096 ] || { echo "$f: over 4 KiB" >&2; exit 1; }
	}
	qemu v2-512 512 16k -- "4k 1k" "0 512" "15k 1k"
	qemu v2-1k-odd 1k 7680 -- "7k 512" "1k 1k"
	qemu v2-1536 1536 12k -- "3k 1k"
	qemu v2-2k-empty 2k 64k --
	qemu v1-512 512 16k v1 -- "8k 512" "0 1k" "12k 512"
	qemu v1-1k 1k 10k v1 -- "9k 1k" "2k 512"
fi
ls -l
