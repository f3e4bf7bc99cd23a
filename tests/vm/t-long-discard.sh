#!/bin/bash
# The long form of t-21-discard (make check-long).
# vm-timeout: 1800
exec "$SRC/tests/vm/t-21-discard.sh" long
