#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make install / uninstall into a DESTDIR: the module, prldisk, the man
# pages and the bash completion land where they should, with their modes,
# and work; uninstall leaves no file.  make install-dkms's source tree
# builds and installs with DKMS (when installed) into private trees, for
# each installed kernel's headers.  Nothing outside $T may change: the host's
# /lib/modules (no depmod), /var/lib/dkms and /usr/src are compared.
set -eu
. "$SRC/tests/vm/lib.sh"
require_cmd make modinfo man
kver=$(ls -d /lib/modules/6.1.*/build 2>/dev/null | sort -V | tail -n 1 | cut -d/ -f4)
[ -n "$kver" ] || skip "no 6.1 kernel headers"
ver=$(sed -n 's/^PACKAGE_VERSION="*\([^"]*\)"*$/\1/p' "$SRC/dkms.conf")
[ -n "$ver" ] || fail "no PACKAGE_VERSION in dkms.conf"
R=$T/root

host_state() {
	find /lib/modules /var/lib/dkms -maxdepth 2 -printf '%p %T@\n' 2>/dev/null
	find /usr/src -maxdepth 1 -printf '%p %T@\n'
}
host_state | sort > host.before

mk() { make -C "$SRC" --no-print-directory KVER="$kver" DESTDIR="$R" "$@"; }

mk install PREFIX=/usr > install.log 2>&1 || { tail -n 30 install.log >&2; fail "make install"; }

# Every file, with its mode, and nothing else (no depmod output either).
cat > want <<EOF
644 $R/lib/modules/$kver/updates/dm-parallels.ko
644 $R/usr/lib/systemd/system/prldisk.service
644 $R/usr/lib/udev/rules.d/60-prldisk.rules
644 $R/usr/share/bash-completion/completions/prldisk
644 $R/usr/share/man/man7/dm-parallels.7
644 $R/usr/share/man/man8/prldisk.8
755 $R/usr/sbin/prldisk
755 $R/usr/share/initramfs-tools/hooks/prldisk
755 $R/usr/share/initramfs-tools/scripts/local-top/prldisk
EOF
find "$R" ! -type d -printf '%m %p\n' | sort > got
diff -u want got >&2 || fail "installed files or modes differ"
grep -qx 'ExecStart=/usr/sbin/prldisk tab activate' "$R/usr/lib/systemd/system/prldisk.service" ||
	fail "the unit does not run the installed prldisk"
grep -q 'PRLDISK:-/usr/sbin/prldisk}' "$R/usr/share/initramfs-tools/hooks/prldisk" ||
	fail "the initramfs hook does not take the installed prldisk"

ko=$R/lib/modules/$kver/updates/dm-parallels.ko
expect_eq "$(modinfo -F name "$ko")" dm_parallels "modinfo name"
expect_eq "$(modinfo -F vermagic "$ko" | cut -d' ' -f1)" "$kver" "module vermagic"
v=$("$R/usr/sbin/prldisk" --version) || fail "prldisk --version"
note "$v"
case $v in "prldisk "?*) ;; *) fail "prldisk --version printed '$v'" ;; esac
for m in man8/prldisk.8:'PRLDISK(8)' man7/dm-parallels.7:'DM-PARALLELS(7)'; do
	page=$R/usr/share/man/${m%%:*}
	MANWIDTH=80 man -l "$page" > page.txt 2> page.err || fail "man -l $page"
	[ ! -s page.err ] || { cat page.err >&2; fail "man -l $page warns"; }
	head -n 1 page.txt | grep -qF "${m#*:}" || fail "$page: no ${m#*:} header"
	grep -q '^NAME' page.txt || fail "$page: no NAME"
	[ "$(wc -l < page.txt)" -gt 50 ] || fail "$page renders short"
	sed -n '/^NAME/{n;p;q}' page.txt | grep -q ' - [A-Za-z]' ||
		fail "$page: empty NAME description"
done
c=$(bash -c '. "$1" && complete -p prldisk' _ "$R/usr/share/bash-completion/completions/prldisk") ||
	fail "the completion file does not load"
expect_eq "$c" "complete -F _prldisk prldisk" "completion"

mk uninstall PREFIX=/usr > uninstall.log 2>&1 || { tail -n 30 uninstall.log >&2; fail "make uninstall"; }
left=$(find "$R" ! -type d)
[ -z "$left" ] || fail "uninstall left: $left"

# DKMS: the source tree install-dkms writes, built by dkms as on a kernel
# update.  Its own trees and a throwaway signing key, all in $T.
if command -v dkms >/dev/null; then
	mk install-dkms > dkms-src.log 2>&1 || { cat dkms-src.log >&2; fail "make install-dkms"; }
	for f in dkms.conf Kbuild kernel/dm-parallels-target.c kernel/prl_format.h; do
		[ -f "$R/usr/src/dm-parallels-$ver/$f" ] || fail "install-dkms: no $f"
	done
	# dkms on our module, kernel $k and private trees; one job, as the
	# host tests share the machine with a VM run under make check.
	dk() {
		env mok_signing_key="$T/mok.key" mok_certificate="$T/mok.pub" \
			dkms "$@" -j 1 -m dm-parallels -v "$ver" -k "$k" --dkmstree "$T/dkms" \
			--sourcetree "$R/usr/src" --installtree "$T/lib/modules"
	}
	for k in $(ls -d /lib/modules/*/build | cut -d/ -f4); do
		mkdir -p "$T/dkms" "$T/lib/modules/$k"
		dk build > "dkms-$k.log" 2>&1 ||
			{ tail -n 30 "dkms-$k.log" >&2
			  cat "$T/dkms/dm-parallels/$ver/$k"/*/log/make.log >&2 || true
			  fail "dkms build for $k"; }
		ko=$(ls "$T/dkms/dm-parallels/$ver/$k"/*/module/dm-parallels.ko* 2>/dev/null) ||
			fail "dkms build for $k: no dm-parallels.ko"
		expect_eq "$(modinfo -F vermagic "$ko" | cut -d' ' -f1)" "$k" "DKMS module vermagic"
		note "dkms built ${ko#"$T"/}"
		# Where Debian's DKMS puts it (DEST_MODULE_LOCATION).
		dk install --no-depmod >> "dkms-$k.log" 2>&1 ||
			{ tail -n 30 "dkms-$k.log" >&2; fail "dkms install for $k"; }
		ls "$T/lib/modules/$k/updates/dkms/dm-parallels.ko"* > /dev/null ||
			fail "dkms install for $k: not in updates/dkms"
	done
	mk uninstall > dkms-uninstall.log 2>&1 || { cat dkms-uninstall.log >&2; fail "make uninstall (DKMS)"; }
	left=$(find "$R" ! -type d)
	[ -z "$left" ] || fail "uninstall left: $left"
else
	note "dkms is not installed: DKMS build not tested"
fi

host_state | sort > host.after
diff -u host.before host.after >&2 || fail "the host's /lib/modules, /var/lib/dkms or /usr/src changed"
