#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# checkpatch.pl --strict on whole files:  tests/tools/checkpatch.sh FILE...
# The script comes from Debian's linux-source-6.1 (the kernel Debian 12 runs),
# extracted once into build/checkpatch/.  Exits non-zero if any file has an
# error, a warning or a check.
set -eu
SRC=$(cd "$(dirname "$0")/../.." && pwd)
D=$SRC/build/checkpatch
TARBALL=/usr/src/linux-source-6.1.tar.xz

[ $# -gt 0 ] || { echo "usage: $0 FILE..." >&2; exit 2; }
if [ ! -f "$D/checkpatch.pl" ]; then
	[ -r "$TARBALL" ] || { echo "checkpatch: no $TARBALL: run tests/install-deps.sh" >&2; exit 1; }
	# checkpatch.pl reads the other two from its own directory.
	rm -rf "$D.tmp" && mkdir -p "$D.tmp"
	tar -xJf "$TARBALL" -C "$D.tmp" --strip-components=2 --occurrence=1 \
		linux-source-6.1/scripts/checkpatch.pl \
		linux-source-6.1/scripts/spelling.txt \
		linux-source-6.1/scripts/const_structs.checkpatch
	rm -rf "$D" && mv "$D.tmp" "$D"	# all or nothing, if interrupted
fi

rc=0
for f; do
	perl "$D/checkpatch.pl" --strict --no-tree --show-types --color=never -f "$f" || rc=1
done
exit $rc
