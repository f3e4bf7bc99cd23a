#!/bin/bash
# The README's demo must keep working: run it as a test.
exec "$SRC/tests/vm/demo.sh"
