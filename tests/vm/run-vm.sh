#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Run the in-guest tests (tests/vm/t-*.sh) on Debian's kernel KVER in QEMU.
#
#   tests/vm/run-vm.sh --kver KVER [--timeout SECS] [--long] [--results DIR] [TEST...]
#
# The hosts have no device-mapper and no module loading, and KVM does not
# work there, so the kernel side runs under TCG.  A TCG boot costs ~10 s,
# hence one boot for the whole suite.  The guest gets the host's root
# read-only over 9p (tools, this repo at the same path, /lib/modules) and a
# writable 9p share, the results dir, for logs and progress.  Prints one TAP
# line per test as it ends, then "N passed, N failed[, N skipped]".
#
#   --timeout SECS  limit for the whole VM (default: 60 + each test's timeout + 15)
#   --long          also run tests/vm/t-long-*.sh
#   --results DIR   logs: <test>.log, <test>.dmesg, console.log, progress
#                   (default build/<kver>/results, emptied first)
#   TEST            t-name (or its path): run only these; or the path of a
#                   script elsewhere in the repo (tests/bench/b-fio.sh), run
#                   and reported the same way under its base name
#
# A test's own timeout is 300 s unless it has a "# vm-timeout: SECS" line.
set -u
export LC_ALL=C

SRC=$(cd "$(dirname "$0")/../.." && pwd)
VM=$SRC/tests/vm

usage() {
	echo "usage: $0 --kver KVER [--timeout SECS] [--long] [--results DIR] [TEST...]" >&2
	exit 2
}

kver='' vm_timeout='' long='' results='' sel=()
while [ $# -gt 0 ]; do
	case $1 in
	--kver) kver=${2-}; shift ;;
	--timeout) vm_timeout=${2-}; shift ;;
	--long) long=1 ;;
	--results) results=${2-}; shift ;;
	-*) usage ;;
	*)	t=${1%.sh} d=
		case $t in */*) d=$(cd "$(dirname "$t")" 2>/dev/null && pwd) ;; esac
		case $d in
		"$VM"|'') t=${t##*/} ;;
		"$SRC"/*) t=${d#"$SRC"/}/${t##*/} ;;	# a script outside tests/vm
		*) t=${t##*/} ;;
		esac
		sel+=("$t") ;;
	esac
	shift
done

# --- TAP output -------------------------------------------------------------
n=0 npass=0 nfail=0 nskip=0
declare -A done_test=()
report() { # report ok|skip|fail TEST [REASON [SECONDS]]
	n=$((n + 1))
	set -- "$1" "${2##*/}" "${3-}" "${4:+ (${4}s)}"	# outside tests/vm: base name
	done_test[$2]=1
	case $1 in
	ok) npass=$((npass + 1)); echo "ok $n - $kver/$2$4" ;;
	skip) nskip=$((nskip + 1)); echo "ok $n - $kver/$2 # SKIP${3:+ $3}" ;;
	*) nfail=$((nfail + 1)); echo "not ok $n - $kver/$2${3:+ # $3}" ;;
	esac
}
comment() { sed 's/^/# /'; }
finish() {
	echo "$npass passed, $nfail failed$([ $nskip -eq 0 ] || echo ", $nskip skipped")"
	[ $nfail -eq 0 ]
	exit
}

# --- which tests ------------------------------------------------------------
tests=()
if [ ${#sel[@]} -gt 0 ]; then
	for t in "${sel[@]}"; do
		f=$VM/$t.sh && case $t in */*) f=$SRC/$t.sh ;; esac
		if [ -x "$f" ]; then tests+=("$t")
		else report fail "$t" "no executable ${f#"$SRC"/}"; fi
	done
else
	for f in "$VM"/t-*.sh; do
		[ -e "$f" ] || continue
		t=$(basename "$f" .sh)
		case $t in t-long-*) [ -n "$long" ] || continue ;; esac
		if [ -x "$f" ]; then tests+=("$t")
		else echo "# $t.sh is not executable: not run"; fi
	done
fi

fail_all() { # fail_all REASON: every test not reported yet fails
	for t in "${tests[@]}"; do
		[ -n "${done_test[${t##*/}]-}" ] || report fail "$t" "$1"
	done
}

if [ -z "$kver" ] || [ ! -e "/boot/vmlinuz-$kver" ] || [ ! -d "/lib/modules/$kver/build" ]; then
	echo "# kernel '$kver': /boot/vmlinuz-$kver or /lib/modules/$kver/build missing (tests/install-deps.sh)"
	fail_all "kernel '$kver' not installed"
	finish
fi
[ ${#tests[@]} -gt 0 ] || finish
# The guest mounts the repo at the same path (its own share, so a clone
# under /tmp or /run, where the guest mounts its own file systems, works
# too); only the kernel's own file systems cannot hold it.
case $SRC/ in
/dev/*|/proc/*|/sys/*)
	echo "# the repo cannot be under /dev, /proc or /sys: clone it elsewhere"
	fail_all "repo at $SRC not visible in the VM"
	finish ;;
esac

B=$SRC/build/$kver
R=${results:-$B/results}
mkdir -p "$B" "$R" && R=$(cd "$R" && pwd) || exit 1
# One run per kernel at a time: they share build/<kver>/.
exec 9> "$B/lock"
flock -n 9 || { echo "# waiting for another run-vm.sh on $kver"; flock 9; }
rm -f "$R"/{progress,console.log,setup.log,tests.list,guest.env} "$R"/t-*.{log,dmesg}
for t in "${tests[@]}"; do rm -f "$R/${t##*/}".{log,dmesg}; done

# --- the module, built out of tree from a copy of the sources ---------------
# A copy, so the source tree's own build products (maybe for another kernel)
# neither confuse this build nor get overwritten by it.
module=
rm -rf "$B/src" && mkdir -p "$B/src"
if tar -C "$SRC" -cf - --exclude='*.o' --exclude='*.ko' --exclude='*.mod' \
	--exclude='*.mod.c' --exclude='.*.cmd' --exclude=modules.order \
	--exclude=Module.symvers kernel Kbuild 2>"$B/build.log" | tar -C "$B/src" -xf - &&
   make -C "/lib/modules/$kver/build" M="$B/src" CONFIG_DEBUG_INFO_BTF_MODULES= \
	-j"$(nproc)" modules >>"$B/build.log" 2>&1 &&
   [ -f "$B/src/dm-parallels.ko" ]; then
	module=$B/src/dm-parallels.ko
else
	# Every test fails; the smoke test still runs, to show the harness works
	# and what a missing module looks like.
	echo "# dm-parallels.ko does not build for $kver ($B/build.log):"
	tail -n 30 "$B/build.log" | comment
	smoke=
	for t in "${tests[@]}"; do [ "$t" = t-00-smoke ] && smoke=1; done
	for t in "${tests[@]}"; do
		[ "$t" = t-00-smoke ] || report fail "$t" "module build failed, not run"
	done
	[ -n "$smoke" ] || finish
	tests=(t-00-smoke)
fi

# --- the initramfs: busybox and the modules that mount the 9p share ---------
# Cached; rebuilt when this script (which writes its init), the base or the
# modules change.
initrd=$B/initramfs.cpio
base=$SRC/tests/tools/initramfs-base.sh
if ! [ "$initrd" -nt "$0" ] || ! [ "$initrd" -nt "$base" ] ||
   ! [ "$initrd" -nt "/lib/modules/$kver/modules.dep" ]; then
	d=$B/initramfs
	rm -rf "$d" && "$base" "$kver" "$d" virtio_pci 9pnet_virtio 9p &&
		mkdir -p "$d"/{sbin,newroot} && mknod "$d/dev/console" c 5 1 || exit 1
	# The kernel's request_module() runs /sbin/modprobe in this root, not
	# in the chroot: send it to the host's modprobe and modules.
	cat > "$d/sbin/modprobe" <<'EOF'
#!/bin/busybox sh
exec /bin/busybox chroot /newroot /sbin/modprobe "$@"
EOF
	cat > "$d/init" <<'EOF'
#!/bin/busybox sh
# PID 1: mount the host's root (9p, read-only) at /newroot, give it the
# writable mounts a system needs, run guest-run.sh chrooted there.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m; done
N=/newroot
i=0
until mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot $N; do
	i=$((i + 1)); [ $i -lt 50 ] || break; sleep 0.1
done
mount -t proc proc $N/proc
mount -t sysfs sys $N/sys
mount -t devtmpfs dev $N/dev
mkdir -p $N/dev/pts $N/dev/shm
mount -t devpts devpts $N/dev/pts
mount -t tmpfs shm $N/dev/shm
ln -s /proc/self/fd $N/dev/fd
ln -s /proc/self/fd/0 $N/dev/stdin
ln -s /proc/self/fd/1 $N/dev/stdout
ln -s /proc/self/fd/2 $N/dev/stderr
# /tmp: ext4 on the scratch disk (a sparse host file) rather than tmpfs:
# O_DIRECT works there (ploop needs it, and loop --direct-io; 6.1's tmpfs has
# none) and test images do not eat guest RAM.
chroot $N /sbin/modprobe -a virtio_blk ext4 virtio_rng
i=0
while [ ! -b $N/dev/vda ] && [ $i -lt 50 ]; do i=$((i + 1)); sleep 0.1; done
mount -t ext4 -o discard $N/dev/vda $N/tmp || mount -t tmpfs -o size=70% tmp $N/tmp
chmod 1777 $N/tmp
mount -t tmpfs run $N/run
mkdir -p $N/run/lock
mount -t tmpfs vartmp $N/var/tmp
mkdir $N/tmp/results
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results $N/tmp/results
. $N/tmp/results/guest.env
# The repo, at its own path, over whatever the guest mounted there.
mkdir -p $N$SRC 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 src $N$SRC
chroot $N /bin/bash "$SRC/tests/vm/guest-run.sh" /tmp/results
rc=$?
# guest-run.sh powers off with its status; if it could not, fail the run.
echo "init: guest-run.sh returned $rc"
printf '\021' | dd of=/dev/port bs=1 seek=244 count=1
poweroff -f
EOF
	chmod +x "$d/init" "$d/sbin/modprobe"
	(cd "$d" && find . | cpio -o -H newc --quiet) > "$initrd.tmp" && mv "$initrd.tmp" "$initrd" || exit 1
fi

# --- boot ---------------------------------------------------------------------
printf '%s\n' "${tests[@]}" > "$R/tests.list"
cat > "$R/guest.env" <<EOF
SRC='$SRC'
KVER='$kver'
MODULE='$module'
EOF
test_timeout() { # the per-test timeout, from a "# vm-timeout: SECS" line
	local s f=$VM/$1.sh
	case $1 in */*) f=$SRC/$1.sh ;; esac
	s=$(sed -n 's/^# vm-timeout: *\([0-9][0-9]*\).*/\1/p' "$f" | head -n 1)
	echo "${s:-300}"
}
if [ -z "$vm_timeout" ]; then
	vm_timeout=60
	for t in "${tests[@]}"; do vm_timeout=$((vm_timeout + $(test_timeout "$t") + 15)); done
fi

# Made fresh each run; no journal (nothing to recover), few inodes (big files).
scratch=$B/scratch.img
rm -f "$scratch" && truncate -s 16G "$scratch" &&
	mkfs.ext4 -q -F -O ^has_journal -i 1048576 -E nodiscard "$scratch" || exit 1
debug_args=${VM_DEBUG_ARGS-slub_debug=FZPU page_poison=1}
qemu=(qemu-system-x86_64 -machine q35,accel=tcg -smp 2 -m 3072 -nodefaults
	-kernel "/boot/vmlinuz-$kver" -initrd "$initrd"
	-append "console=ttyS0 panic=-1 oops=panic panic_on_warn=1 hung_task_panic=1 $debug_args log_buf_len=8M"
	-display none -serial stdio -no-reboot
	-device isa-debug-exit,iobase=0xf4,iosize=0x04
	-drive "file=$scratch,if=virtio,format=raw,cache=unsafe,discard=unmap"
	-device virtio-rng-pci
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
	-virtfs "local,path=$SRC,mount_tag=src,security_model=none,readonly=on,multidevs=remap"
	-virtfs "local,path=$R,mount_tag=results,security_model=none,multidevs=remap")

t0=$(date +%s)
boot_vm() {
	timeout -k 10 "$vm_timeout" "${qemu[@]}" </dev/null >"$R/console.log" 2>&1 &
	qpid=$!
}
boot_vm
# Never leave a VM behind, also when our reader goes away (SIGPIPE).
for sig in HUP INT PIPE TERM; do trap 'kill $qpid 2>/dev/null; exit 1' $sig; done

# --- follow the guest's progress file, reporting each test as it ends ---------
seen=0 running='' boot='' finished=''
follow() {
	local line t v d why
	[ -f "$R/progress" ] || return 0
	while IFS= read -r line; do	# an unfinished last line is read next time
		seen=$((seen + 1))
		set -- $line	# fields: word splitting wanted
		case $1 in
		ready) boot=$2
			[ ! -s "$R/setup.log" ] || comment < "$R/setup.log" ;;
		start) running=$2 ;;
		end)	running='' t=$2 v=$3 d=$4; shift 4; why=$*
			if [ "$v" = skip ]; then
				why=$(sed -n 's/^# SKIP:* *//p' "$R/$t.log" | tail -n 1)
			fi
			report "$v" "$t" "$why" "$d"
			[ "$v" != fail ] || tail -n 40 "$R/$t.log" | comment ;;
		done) finished=1 ;;
		esac
	done < <(tail -n +"$((seen + 1))" "$R/progress")
}
tries=1
while :; do
	alive=1
	kill -0 $qpid 2>/dev/null || alive=
	follow
	if [ -z "$alive" ]; then
		wait $qpid
		qrc=$?
		# A kernel that died while booting, before any test ran, is
		# booted once more: 6.12 under TCG now and then hits an int3
		# left by its own code patching early in boot.
		if [ -z "$boot" ] && [ $qrc -eq 0 ] && [ $tries -eq 1 ] &&
		   grep -aq 'Kernel panic' "$R/console.log"; then
			tries=2
			mv "$R/console.log" "$R/console-boot1.log"
			echo "# the kernel panicked while booting ($R/console-boot1.log): booting again"
			boot_vm
			continue
		fi
		break
	fi
	sleep 1
done
trap - HUP INT PIPE TERM
follow

if [ -z "$finished" ]; then
	case $qrc in
	124|137) why="VM timed out after ${vm_timeout}s" ;;
	33|35) why="the guest's test runner stopped early" ;;
	0)	why=$(grep -a -m1 -o 'Kernel panic - not syncing:.*' "$R/console.log" | tr -d '\r')
		why=${why:-"VM stopped (guest reset or power-off)"} ;;
	*) why="QEMU exited with status $qrc" ;;
	esac
	if [ -n "$running" ]; then
		report fail "$running" "$why"
		tail -n 20 "$R/$running.log" 2>/dev/null | comment
	else
		echo "# VM stopped outside a test: $why"
	fi
	echo "# last lines of $R/console.log:"
	tail -n 60 "$R/console.log" | tr -d '\r' | comment
fi
fail_all "not run"
rm -f "$scratch"
echo "# $kver: boot ${boot:-?} s to first test, VM total $(($(date +%s) - t0)) s, logs in $R"
finish
