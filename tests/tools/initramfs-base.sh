#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The start of a busybox initramfs for Debian's kernel KVER, for the test
# VMs to write their own /init into:
#   tests/tools/initramfs-base.sh KVER DIR MODULE...
# DIR gets bin/busybox, dev/, proc/, and in lib/modules/ each MODULE with
# what it depends on, unpacked (busybox insmod wants plain .ko), and the
# file "order" naming them dependencies first.
set -eu -o pipefail
[ $# -ge 2 ] || { echo "usage: $0 KVER DIR MODULE..." >&2; exit 2; }
kver=$1 d=$2
shift 2
mkdir -p "$d"/{bin,dev,proc,lib/modules}
cp "$(command -v busybox)" "$d/bin/busybox"
: > "$d/lib/modules/order"
for m in "$@"; do
	modprobe -S "$kver" --show-depends "$m"
done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' |
while read -r ko; do
	name=${ko##*/} && name=${name%.ko*}.ko
	case $ko in
	*.xz) xz -dc "$ko" ;; *.zst) zstd -dc "$ko" ;; *.gz) gzip -dc "$ko" ;; *) cat "$ko" ;;
	esac > "$d/lib/modules/$name"
	echo "$name" >> "$d/lib/modules/order"
done
[ -s "$d/lib/modules/order" ] || [ $# -eq 0 ] || { echo "$0: no modules for $kver" >&2; exit 1; }
