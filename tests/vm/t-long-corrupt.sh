#!/bin/bash
# The long form of t-12-corrupt (make check-long).
# vm-timeout: 1800
exec "$SRC/tests/vm/t-12-corrupt.sh" long
