#!/bin/bash
# The long forms of t-24-crash, t-26-crash-ext4 and t-27-crash-fio
# (make check-long).
# vm-timeout: 5400
"$SRC/tests/vm/t-24-crash.sh" long || exit
"$SRC/tests/vm/t-26-crash-ext4.sh" long || exit
exec "$SRC/tests/vm/t-27-crash-fio.sh" long
