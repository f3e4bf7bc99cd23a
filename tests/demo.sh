#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The main job, `make demo`: boot Debian's kernel in QEMU, make a Parallels
# disk with a snapshot, activate it as a chain of parallels tables, use it.
#   tests/demo.sh [--kver KVER]
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
kver=${2:-}
[ "${1:-}" = --kver ] && [ -n "$kver" ] ||
	kver=$(ls -d /lib/modules/6.1.*/build 2>/dev/null | sort -V | tail -n 1 | cut -d/ -f4)
[ -n "$kver" ] || { echo "demo: no 6.1 kernel headers: run tests/install-deps.sh" >&2; exit 1; }

results=$SRC/build/$kver/demo
rm -rf "$results"
echo "Booting $kver in QEMU (software emulation, this takes a minute)..."
"$SRC/tests/vm/run-vm.sh" --kver "$kver" --results "$results" demo
rc=$?
echo
echo "----- what the demo did, inside the VM -----"
cat "$results/demo.log"
exit $rc
