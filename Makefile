# SPDX-License-Identifier: GPL-2.0
#
# dm-parallels: the kernel module, the userspace parts and the tests.
#
#   make                 module (for KVER) + userspace
#   make check           host unit tests + VM suite on 6.1, core VM tests on 6.12
#   make check-long      every VM test and the long suites on both kernels
#   make sparse          module under sparse, warnings fatal
#   make checkpatch      checkpatch.pl --strict on the kernel sources
#   make demo            boot a VM, activate a Parallels disk stack, use it
#   make bench           fio in a VM: parallels vs dm-linear (BENCH_KVER=6.12)

# Default: the newest installed 6.1 headers (Debian 12's kernel).
kver_of = $(shell ls -d /lib/modules/$(1)*/build 2>/dev/null | sort -V | tail -n 1 | cut -d/ -f4)
KVER ?= $(call kver_of,6.1.)
KVER_612 ?= $(call kver_of,6.12.)
KDIR ?= /lib/modules/$(KVER)/build
BUILD ?= $(CURDIR)/build

KMAKE = $(MAKE) -C $(KDIR) M=$(CURDIR) CONFIG_DEBUG_INFO_BTF_MODULES=

.PHONY: all module userspace clean sparse checkpatch unit check check-long \
	check-6.1 check-6.12 demo fuzz bench

all: module userspace

module:
	@test -d "$(KDIR)" || { echo "no kernel headers at $(KDIR): run tests/install-deps.sh" >&2; exit 1; }
	$(KMAKE) W=1 modules

userspace:
	$(MAKE) -C userspace

sparse:
	$(KMAKE) clean
	$(KMAKE) C=2 CF=-Wsparse-error modules

checkpatch:
	tests/tools/checkpatch.sh kernel/*.c kernel/*.h

unit:
	$(MAKE) -C userspace check

fuzz:
	$(MAKE) -C userspace fuzz

# Each VM run builds the module for its kernel into build/<kver>/.
# check: every VM test on 6.1, the core ones (tests/vm/core.list) on 6.12;
# check-long: every test and the long suites on both.
check:
	tests/run-all.sh --kver "$(KVER)" --core-kver "$(KVER_612)"

check-6.1:
	tests/run-all.sh --kver "$(KVER)"

check-6.12:
	tests/run-all.sh --kver "$(KVER_612)"

check-long:
	tests/run-all.sh --long --kver "$(KVER)" --kver "$(KVER_612)"

demo:
	tests/demo.sh --kver "$(KVER)"

# Not part of check: fio under TCG, ~10 min; the table is also saved in
# build/bench-<kver>.txt.  BENCH_KVER: a version or its start (6.12).
BENCH_KVER ?= $(KVER)
BENCH_RUNTIME ?= 5
BENCH_REPEAT ?= 5
bench:
	tests/bench/run-bench.sh --kver "$(call kver_of,$(BENCH_KVER))" \
		--runtime "$(BENCH_RUNTIME)" --repeat "$(BENCH_REPEAT)"

clean:
	-$(KMAKE) clean
	$(MAKE) -C userspace clean
	rm -rf $(BUILD)
