#!/bin/sh
# Install every Debian 12 package the build, the tests and the demo need.
# Adds bookworm-backports (for the 6.12 kernel) by deriving its sources entry
# from the machine's own Debian entry, so no mirror is named here.
set -eu
export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 && exec sudo "$0" "$@"
	echo "install-deps: run this as root (apt-get needs it)" >&2
	exit 1
fi

if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
	uri=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' \
		/etc/apt/sources.list.d/*.sources 2>/dev/null || true)
	[ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
		/etc/apt/sources.list 2>/dev/null || true)
	if [ -n "$uri" ]; then
		cat > /etc/apt/sources.list.d/bookworm-backports.sources <<EOT
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOT
	fi
fi

apt-get update -q
apt-get install -y -q --no-install-recommends \
	build-essential make gcc clang libclang-rt-14-dev sparse perl python3 \
	linux-headers-amd64 linux-image-amd64 linux-source-6.1 \
	qemu-system-x86 qemu-utils busybox-static kmod cpio \
	dmsetup libdevmapper-dev libxml2-dev uuid-dev libssl-dev libjson-c-dev \
	libcmocka-dev pkg-config ploop e2fsprogs fio xz-utils util-linux strace \
	python3-docutils dkms man-db systemd udev

# The 6.12 kernel and headers from bookworm-backports (pahole for BTF).
apt-get install -y -q --no-install-recommends -t bookworm-backports \
	linux-image-amd64 linux-headers-amd64 dwarves || \
	echo "install-deps: bookworm-backports kernel not available" >&2
