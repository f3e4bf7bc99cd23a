#!/bin/bash
# The long form of t-23-ext4-fio (make check-long).
# vm-timeout: 1800
exec "$SRC/tests/vm/t-23-ext4-fio.sh" long
