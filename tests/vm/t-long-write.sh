#!/bin/bash
# The long form of t-20-write (make check-long).
# vm-timeout: 1800
exec "$SRC/tests/vm/t-20-write.sh" long
