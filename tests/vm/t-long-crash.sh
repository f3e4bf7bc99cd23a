#!/bin/bash
# The long form of t-24-crash (make check-long).
# vm-timeout: 1800
exec "$SRC/tests/vm/t-24-crash.sh" long
