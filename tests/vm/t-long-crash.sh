#!/bin/bash
# The long forms of t-24-crash and t-26-crash-ext4 (make check-long).
# vm-timeout: 3600
"$SRC/tests/vm/t-24-crash.sh" long || exit
exec "$SRC/tests/vm/t-26-crash-ext4.sh" long
