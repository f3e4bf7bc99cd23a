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
#   make man             build/man/prldisk.8 and dm-parallels.7 (rst2man)
#   make install         module (lib/modules/KVER/updates), prldisk, man pages,
#                        bash completion, prldisk.service, udev rules,
#                        initramfs-tools hook;
#                        DESTDIR, PREFIX (/usr/local), KVER
#   make install-dkms    module sources to /usr/src for DKMS, added and installed
#   make uninstall       remove what install and install-dkms put (same options)

# Default: the newest installed 6.1 headers (Debian 12's kernel).
kver_of = $(shell ls -d /lib/modules/$(1)*/build 2>/dev/null | sort -V | tail -n 1 | cut -d/ -f4)
KVER ?= $(call kver_of,6.1.)
KVER_612 ?= $(call kver_of,6.12.)
KDIR ?= /lib/modules/$(KVER)/build
BUILD ?= $(CURDIR)/build

KMAKE = $(MAKE) -C $(KDIR) M=$(CURDIR) CONFIG_DEBUG_INFO_BTF_MODULES=

.PHONY: all module userspace clean sparse checkpatch unit check check-long \
	check-6.1 check-6.12 demo fuzz bench man install install-dkms uninstall

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

# The VM runs build the module for their kernel; prldisk is built here.
demo: userspace
	tests/demo.sh --kver "$(KVER)"

# Not part of check: fio under TCG, ~10 min; the table is also saved in
# build/bench-<kver>.txt.  BENCH_KVER: a version or its start (6.12).
BENCH_KVER ?= $(KVER)
BENCH_RUNTIME ?= 5
BENCH_REPEAT ?= 5
bench: userspace
	tests/bench/run-bench.sh --kver "$(call kver_of,$(BENCH_KVER))" \
		--runtime "$(BENCH_RUNTIME)" --repeat "$(BENCH_REPEAT)"

# ---- installation ---------------------------------------------------------

# The package version lives in dkms.conf, which DKMS needs literally.  Not
# called VERSION: a VERSION=... on the command line would reach the kernel's
# Makefile (through MAKEFLAGS) and override its own.
PKG_VERSION := $(shell sed -n 's/^PACKAGE_VERSION="*\([^"]*\)"*$$/\1/p' $(CURDIR)/dkms.conf)
PREFIX ?= /usr/local
DESTDIR ?=
SBINDIR = $(PREFIX)/sbin
MANDIR = $(PREFIX)/share/man
COMPLETIONDIR = $(PREFIX)/share/bash-completion/completions
MODULEDIR = /lib/modules/$(KVER)/updates
# systemd looks in $(PREFIX)/lib/systemd/system for /usr and /usr/local;
# udev only in /usr/lib and /etc.
UNITDIR = $(PREFIX)/lib/systemd/system
UDEVRULESDIR = $(if $(filter /usr,$(PREFIX)),/usr/lib/udev/rules.d,/etc/udev/rules.d)
INITRAMFSDIR = $(if $(filter /usr,$(PREFIX)),/usr/share/initramfs-tools,/etc/initramfs-tools)
# The system files name the installed prldisk.
SET_PATH = sed 's|/usr/local/sbin/prldisk|$(SBINDIR)/prldisk|'
DKMS_SRC = /usr/src/dm-parallels-$(PKG_VERSION)
RST2MAN ?= $(firstword $(shell command -v rst2man rst2man.py 2>/dev/null))

# rst2man gives dm-parallels.rst (a reference, no man title block) no section
# and an empty NAME line, with the text that follows under NAME: when the
# .rst does not say them, fill in both and start a DESCRIPTION.
MAN_DESC_dm-parallels = device-mapper target for Parallels (ploop) disk images
define rst2man
	@test -n "$(RST2MAN)" || { echo "no rst2man: apt-get install python3-docutils" >&2; exit 1; }
	@mkdir -p $(@D)
	$(RST2MAN) --halt=error $< $@.tmp
	sed -i -e 's/^\(\.TH "[^"]*"\) *"" /\1 $(1) /' \
		-e 's/^\($(*F) \\-\) *$$/\1 $(MAN_DESC_$(*F))\n.SH DESCRIPTION/' $@.tmp
	mv $@.tmp $@
endef

$(BUILD)/man/%.8: Documentation/%.rst
	$(call rst2man,8)

$(BUILD)/man/%.7: Documentation/%.rst
	$(call rst2man,7)

MAN_PAGES = $(BUILD)/man/prldisk.8 $(BUILD)/man/dm-parallels.7
man: $(MAN_PAGES)

# depmod only for the running system: a DESTDIR is a package or an image,
# whose own installation runs depmod (and uninstall could not tell the
# modules.* files it made from ones that were there).
install: all man
	@test -n "$(KVER)" || { echo "no kernel headers: set KVER" >&2; exit 1; }
	install -D -m 644 dm-parallels.ko $(DESTDIR)$(MODULEDIR)/dm-parallels.ko
	install -D -m 755 userspace/prldisk $(DESTDIR)$(SBINDIR)/prldisk
	install -D -m 644 $(BUILD)/man/prldisk.8 $(DESTDIR)$(MANDIR)/man8/prldisk.8
	install -D -m 644 $(BUILD)/man/dm-parallels.7 $(DESTDIR)$(MANDIR)/man7/dm-parallels.7
	install -D -m 644 userspace/prldisk.bash-completion $(DESTDIR)$(COMPLETIONDIR)/prldisk
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(INITRAMFSDIR)/hooks \
		$(DESTDIR)$(INITRAMFSDIR)/scripts/local-top
	$(SET_PATH) userspace/system/prldisk.service > $(DESTDIR)$(UNITDIR)/prldisk.service
	chmod 644 $(DESTDIR)$(UNITDIR)/prldisk.service
	$(SET_PATH) userspace/system/initramfs/hook > $(DESTDIR)$(INITRAMFSDIR)/hooks/prldisk
	install -m 755 userspace/system/initramfs/local-top \
		$(DESTDIR)$(INITRAMFSDIR)/scripts/local-top/prldisk
	chmod 755 $(DESTDIR)$(INITRAMFSDIR)/hooks/prldisk
	install -D -m 644 userspace/system/60-prldisk.rules $(DESTDIR)$(UDEVRULESDIR)/60-prldisk.rules
	$(if $(DESTDIR),,depmod -a $(KVER))

# Take out of DKMS a version it has (so install-dkms can be run again).
DKMS_REMOVE = if command -v dkms >/dev/null && \
	dkms status -m dm-parallels -v $(PKG_VERSION) | grep -q .; then \
	dkms remove -m dm-parallels -v $(PKG_VERSION) --all; fi

# The DKMS source tree keeps the repo's layout (Kbuild names kernel/*.o);
# dkms.conf gets PKG_VERSION in case it was set on the command line.  DKMS
# builds for the running kernel, or for KVER when it is given, and then for
# each new kernel (AUTOINSTALL).
DKMS_KVER = $(if $(filter command line environment,$(origin KVER)),-k $(KVER))
install-dkms:
	@test -n "$(PKG_VERSION)" || { echo "no PACKAGE_VERSION in dkms.conf" >&2; exit 1; }
	$(if $(DESTDIR),,$(DKMS_REMOVE))
	install -d $(DESTDIR)$(DKMS_SRC)/kernel
	install -m 644 Kbuild $(DESTDIR)$(DKMS_SRC)/
	install -m 644 kernel/*.c kernel/*.h $(DESTDIR)$(DKMS_SRC)/kernel/
	sed 's/^PACKAGE_VERSION=.*/PACKAGE_VERSION="$(PKG_VERSION)"/' dkms.conf \
		> $(DESTDIR)$(DKMS_SRC)/dkms.conf
	$(if $(DESTDIR),,dkms add -m dm-parallels -v $(PKG_VERSION))
	$(if $(DESTDIR),,dkms build -m dm-parallels -v $(PKG_VERSION) $(DKMS_KVER))
	$(if $(DESTDIR),,dkms install -m dm-parallels -v $(PKG_VERSION) $(DKMS_KVER))

uninstall:
	@test -n "$(PKG_VERSION)" || { echo "no PACKAGE_VERSION in dkms.conf" >&2; exit 1; }
	rm -f $(DESTDIR)$(MODULEDIR)/dm-parallels.ko $(DESTDIR)$(SBINDIR)/prldisk \
		$(DESTDIR)$(MANDIR)/man8/prldisk.8 $(DESTDIR)$(MANDIR)/man7/dm-parallels.7 \
		$(DESTDIR)$(COMPLETIONDIR)/prldisk $(DESTDIR)$(UNITDIR)/prldisk.service \
		$(DESTDIR)$(UDEVRULESDIR)/60-prldisk.rules \
		$(DESTDIR)$(INITRAMFSDIR)/hooks/prldisk \
		$(DESTDIR)$(INITRAMFSDIR)/scripts/local-top/prldisk
	$(if $(DESTDIR),,$(DKMS_REMOVE))
	rm -rf $(DESTDIR)$(DKMS_SRC)
	$(if $(DESTDIR),,$(if $(KVER),depmod -a $(KVER)))

clean:
	-$(KMAKE) clean
	$(MAKE) -C userspace clean
	rm -rf $(BUILD)
