#!/bin/busybox sh
# PID 1 of the rig's L1 machine (built into its initramfs by rig/src/initrd.rs).
#
# It loads the modules listed in /lib/modules/load, finds the virtio-serial ports moat-rig listens
# on, mounts the host's root (read-only) and the scratch and writable shares over 9p, chroots into
# the host's root and runs run.sh there. It reports on the port "moat.ctl", one line per event:
#   booted <uptime at init start> <uptime after modules>
#   warn <text>        something moat-rig should print
#   kvm-error <text>   /dev/kvm did not appear
#   error <text>       L1 could not set up CMD's world
#   exit <status>      CMD's exit status, as sh reports it
# and then powers the machine off. moat-rig treats a run that ends without "exit" as a failure.

B=/bin/busybox
export PATH=/bin
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
t0=$($B cut -d' ' -f1 /proc/uptime)

failed=
while read -r m; do
	$B insmod "/lib/modules/$m.ko" 2>>/tmp/insmod.err || failed="$failed $m"
done </lib/modules/load
t1=$($B cut -d' ' -f1 /proc/uptime)

# virtio_console announces its ports asynchronously: wait up to 5 s for the three of ours.
ctl= out= err= i=0
while [ $i -lt 500 ]; do
	for p in /sys/class/virtio-ports/*; do
		[ -r "$p/name" ] || continue
		dev=/dev/${p##*/}
		[ -c "$dev" ] || continue
		case "$($B cat "$p/name")" in
		moat.ctl) ctl=$dev ;;
		moat.out) out=$dev ;;
		moat.err) err=$dev ;;
		esac
	done
	[ -n "$ctl" ] && [ -n "$out" ] && [ -n "$err" ] && break
	$B usleep 10000
	i=$((i + 1))
done
if [ -z "$ctl" ] || [ -z "$out" ] || [ -z "$err" ]; then
	echo "moat-rig init: virtio-serial ports missing (modules that failed:$failed)" >/dev/console
	$B cat /tmp/insmod.err >/dev/console 2>/dev/null
	$B reboot -f
fi
exec 3>"$ctl"
echo "booted $t0 $t1" >&3

die() {
	echo "$1 $2" >&3
	$B sync
	$B reboot -f
	exit 1
}
oneline() { $B tr '\n' ' ' <"$1" 2>/dev/null; }

if [ ! -c /dev/kvm ]; then
	die kvm-error "/dev/kvm is missing after loading kvm_amd (failed:$failed): $(oneline /tmp/insmod.err) $($B dmesg | $B grep -iE 'kvm|svm' | $B tail -n 3 | $B tr '\n' ' ')"
fi
[ -n "$failed" ] && echo "warn modules failed to load:$failed: $(oneline /tmp/insmod.err)" >&3

opts=trans=virtio,version=9p2000.L,msize=262144
$B mkdir -p /scratch /mnt/root
$B mount -t 9p -o "$opts,cache=mmap" moat.scratch /scratch || die error "cannot mount the scratch share"
. /scratch/.rig/rig.env || die error "cannot read the scratch share's rig.env"
for m in $RIG_MODULES; do
	$B insmod "/lib/modules/$m.ko" 2>/tmp/insmod.err || die error "cannot load module $m: $(oneline /tmp/insmod.err)"
done
$B mount -t 9p -o "$opts,ro,cache=loose" moat.root /mnt/root || die error "cannot mount the host's root over 9p"
r=/mnt/root
$B mount -t proc proc $r/proc || die error "cannot mount /proc"
$B mount -t sysfs sysfs $r/sys || die error "cannot mount /sys"
$B mount -t cgroup2 cgroup2 $r/sys/fs/cgroup 2>/dev/null || echo "warn cgroup2 not mounted" >&3
$B mount -t devtmpfs devtmpfs $r/dev || die error "cannot mount /dev"
$B mkdir -p $r/dev/pts $r/dev/shm
$B mount -t devpts -o newinstance,ptmxmode=0666 devpts $r/dev/pts
$B mount -t tmpfs -o mode=1777 tmpfs $r/dev/shm
$B mount -t tmpfs -o mode=755 tmpfs $r/run
$B mount -o bind /scratch "$r$RIG_SCRATCH" || die error "cannot mount the scratch share at $RIG_SCRATCH"
# CMD's TMPDIR: a tmpfs in L1 over the share's tmp/ (9p cannot hold Unix sockets, and is slow).
$B mount -t tmpfs -o mode=1777 tmpfs "$r$RIG_SCRATCH/tmp" || die error "cannot mount a tmpfs for TMPDIR"
n=0
while [ $n -lt "$RIG_RW_COUNT" ]; do
	eval "tag=\$RIG_RW_TAG_$n path=\$RIG_RW_PATH_$n"
	$B mount -t 9p -o "$opts,cache=mmap" "$tag" "$r$path" || die error "cannot mount the writable share $path"
	n=$((n + 1))
done
$B hostname moat-rig
$B ip link set lo up

$B env -i $B chroot $r /bin/sh "$RIG_RUN" </dev/null >"$out" 2>"$err" 3>&-
echo "exit $?" >&3
$B sync
$B reboot -f
