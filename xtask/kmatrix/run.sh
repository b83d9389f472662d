#!/bin/bash
# run.sh KERNEL_IMAGE COMMAND [ARGS...]
#
# Boots KERNEL_IMAGE (a bzImage/vmlinuz, e.g. Debian's 6.1) under QEMU with the
# host's live root filesystem as the guest root (9p, read-only, with a tmpfs
# overlay on top so the guest can write; writes are thrown away), runs
# COMMAND as root inside, streams its stdout+stderr, and exits with its exit
# code.  124 = timed out, 125 = the VM died before the command finished.
#
# Modules: taken from KM_MODULES_BASE (a directory holding lib/modules/VER, e.g. an
# extracted linux-image .deb), or from /lib/modules/VER of the host.  The guest's
# /lib/modules/VER is bound to that tree, so modprobe and kernel module auto-loading
# (e.g. `tc qdisc add ... clsact` -> sch_ingress) work.
#
# Knobs (environment):
#   KM_TIMEOUT  seconds for the whole VM run (default 600)
#   KM_ACCEL    tcg (default) or kvm  (kvm does NOT work on this machine: nested KVM runs
#               ~100x slower and dies with "KVM internal error ... emulation failure")
#   KM_SMP      vCPUs (default: nproc)       KM_MEM   memory (default 2G)
#   KM_MODULES_BASE  see above               KM_PRELOAD  modules to modprobe before COMMAND
#   KM_APPEND   extra kernel command line    KM_KEEP=1   keep the run dir (console log) afterwards
#   KM_QEMU_ARGS  extra qemu arguments
#   KM_ARTIFACTS=DIR  files the command writes to $KM_ARTIFACTS_DIR in the guest end up in DIR
#   KM_CONSOLE=1  also print the guest kernel console log at the end
#   KM_CACHE    where initramfs images are cached (default /var/cache/rstwatch-kmatrix/initramfs)
# Needs qemu-system-x86, busybox-static and kmod (`cargo xtask setup` installs them).
set -u
if [ $# -lt 2 ]; then
    echo "usage: $0 KERNEL_IMAGE COMMAND [ARGS...]" >&2
    exit 2
fi
KIMG=$(readlink -f "$1"); shift
[ -r "$KIMG" ] || { echo "run.sh: no kernel image $KIMG" >&2; exit 2; }
TIMEOUT=${KM_TIMEOUT:-600}
ACCEL=${KM_ACCEL:-tcg}
SMP=${KM_SMP:-$(nproc)}
MEM=${KM_MEM:-2G}

# Kernel release string from the bzImage header (offset 0x20e -> string at +0x200).
KVER=$(python3 - "$KIMG" <<'EOF'
import struct, sys
d = open(sys.argv[1], 'rb').read(65536)
if d[0x202:0x206] != b'HdrS':
    sys.exit("not a bzImage")
off = struct.unpack_from('<H', d, 0x20e)[0] + 0x200
print(d[off:d.index(b'\0', off)].split(b' ')[0].decode())
EOF
) || { echo "run.sh: cannot read the kernel version of $KIMG" >&2; exit 2; }

# Where its modules are.
MODBASE=""
for b in ${KM_MODULES_BASE:-} ""; do
    if [ -d "$b/lib/modules/$KVER/kernel" ]; then MODBASE=$b; break; fi
done
if [ -z "$MODBASE" ] && [ ! -d "/lib/modules/$KVER" ]; then
    echo "run.sh: no modules for $KVER (set KM_MODULES_BASE); continuing without" >&2
fi
MODDIR=${MODBASE}/lib/modules/$KVER
if [ -d "$MODDIR/kernel" ] && [ ! -s "$MODDIR/modules.dep" ]; then
    depmod -b "${MODBASE:-/}" "$KVER"
fi

# Initramfs (cached per kernel release): static busybox, the modules needed to
# mount the 9p root and the overlay, and /init.
CACHE=${KM_CACHE:-/var/cache/rstwatch-kmatrix/initramfs}; mkdir -p "$CACHE"
INITRD=$CACHE/initramfs-$KVER.cpio.gz
if [ ! -s "$INITRD" ] || [ "$0" -nt "$INITRD" ]; then
    BB=$(command -v busybox) || { echo "run.sh: needs busybox-static" >&2; exit 2; }
    ! ldd "$BB" >/dev/null 2>&1 || { echo "run.sh: $BB is not static (apt-get install busybox-static)" >&2; exit 2; }
    IR=$(mktemp -d); mkdir -p "$IR"/{bin,dev,proc,sys,lower,upper,newroot,kmout,mods}
    cp "$BB" "$IR/bin/busybox"; ln -s busybox "$IR/bin/sh"
    : > "$IR/mods/order"
    if [ -d "$MODDIR/kernel" ]; then
        for m in virtio_pci 9pnet_virtio 9p overlay; do
            modprobe -d "${MODBASE:-/}" -S "$KVER" --show-depends "$m" 2>/dev/null |
                awk '$1=="insmod"{print $2}'
        done | awk '!seen[$0]++' | while read -r ko; do
            b=$(basename "$ko")
            case "$b" in
                *.ko.xz)  b=${b%.xz};  xz -dc "$ko" > "$IR/mods/$b" ;;
                *.ko.zst) b=${b%.zst}; zstd -qdc "$ko" > "$IR/mods/$b" ;;
                *.ko.gz)  b=${b%.gz};  gzip -dc "$ko" > "$IR/mods/$b" ;;
                *)        cp "$ko" "$IR/mods/" ;;
            esac
            echo "$b" >> "$IR/mods/order"
        done
    fi
    cat > "$IR/init" <<'EOF'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m || echo "initramfs: insmod $m failed"; done
die() { echo "initramfs: $*"; echo o > /proc/sysrq-trigger; sleep 10; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 kmroot /lower || die "cannot mount the 9p root"
mount -t tmpfs -o mode=0755 tmp /upper && mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /newroot || die "cannot mount the overlay"
mkdir -p /newroot/.kmout
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=524288 kmout /newroot/.kmout || die "cannot mount kmout"
umount /proc /sys /dev
exec switch_root /newroot /bin/sh /.kmout/guest.sh
EOF
    chmod +x "$IR/init"
    (cd "$IR" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$INITRD.tmp" && mv "$INITRD.tmp" "$INITRD"
    rm -rf "$IR"
fi

RUN=$(mktemp -d /tmp/kmatrix-run.XXXXXX)
cleanup() {
    [ -n "${QPID:-}" ] && kill "$QPID" 2>/dev/null
    [ -n "${TPID:-}" ] && kill "$TPID" 2>/dev/null
    if [ "${KM_KEEP:-0}" = 1 ]; then echo "run.sh: kept $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CMD=$(printf '%q ' "$@")
GUEST_MODDIR=""
[ -d "$MODDIR/kernel" ] && [ "$MODDIR" != "/lib/modules/$KVER" ] && GUEST_MODDIR=$MODDIR
cat > "$RUN/guest.sh" <<EOF
# runs in the guest as PID 1, on the overlay root
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb LANG=C.UTF-8
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm
mount -t tmpfs -o mode=0755 run /run; mkdir -p /run/netns /run/lock
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
if [ -n "$GUEST_MODDIR" ]; then
    mkdir -p /lib/modules/$KVER && mount --bind "$GUEST_MODDIR" /lib/modules/$KVER
fi
echo /sbin/modprobe > /proc/sys/kernel/modprobe
for m in ${KM_PRELOAD:-}; do modprobe \$m || echo "guest: modprobe \$m failed"; done
hostname kmatrix; ip link set lo up
stty -F /dev/ttyS1 raw -echo 2>/dev/null
mkdir -p /.kmout/artifacts; export KM_ARTIFACTS_DIR=/.kmout/artifacts
cd $(printf '%q' "$PWD") 2>/dev/null || cd /
( $CMD ) </dev/null >/dev/ttyS1 2>&1
rc=\$?
echo \$rc > /.kmout/rc.tmp && mv /.kmout/rc.tmp /.kmout/rc
sync
echo o > /proc/sysrq-trigger
sleep 30 2>/dev/null
EOF

: > "$RUN/out.log"
tail -n +1 -f "$RUN/out.log" & TPID=$!
START=$SECONDS
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 \
    -accel "$ACCEL$([ "$ACCEL" = tcg ] && echo ,thread=multi)" \
    $([ -r /usr/share/qemu/qboot.rom ] && echo "-bios /usr/share/qemu/qboot.rom") \
    -machine q35 -cpu "$([ "$ACCEL" = kvm ] && echo host,-arch-capabilities || echo max)" \
    -smp "$SMP" -m "$MEM" \
    -nodefaults -no-user-config -display none -no-reboot \
    -serial "file:$RUN/console.log" -serial "file:$RUN/out.log" \
    -kernel "$KIMG" -initrd "$INITRD" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4 mitigations=off nokaslr ${KM_APPEND:-}" \
    -virtfs local,path=/,mount_tag=kmroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$RUN,mount_tag=kmout,security_model=none" \
    ${KM_QEMU_ARGS:-} \
    >"$RUN/qemu.log" 2>&1 &
QPID=$!
wait "$QPID"; QRC=$?; QPID=""
sleep 0.3; kill "$TPID" 2>/dev/null; wait "$TPID" 2>/dev/null; TPID=""
ELAPSED=$((SECONDS - START))
if [ -s "$RUN/rc" ]; then
    RC=$(cat "$RUN/rc")
elif [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
    echo "run.sh: timed out after ${TIMEOUT}s" >&2; RC=124
else
    echo "run.sh: the VM ended (qemu rc $QRC) without the command's exit code" >&2; RC=125
fi
if [ -n "${KM_ARTIFACTS:-}" ] && [ -d "$RUN/artifacts" ]; then
    mkdir -p "$KM_ARTIFACTS" && cp -r "$RUN/artifacts/." "$KM_ARTIFACTS/"
fi
if [ "$RC" = 124 ] || [ "$RC" = 125 ] || [ "${KM_CONSOLE:-0}" = 1 ]; then
    echo "---- guest console (tail) ----" >&2; tail -n 40 "$RUN/console.log" | tr -d '\r' >&2
    cat "$RUN/qemu.log" >&2
fi
echo "run.sh: kernel $KVER, accel $ACCEL, exit $RC, ${ELAPSED}s" >&2
exit "$RC"
