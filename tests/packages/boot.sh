#!/usr/bin/env bash
# tests/packages/boot.sh DEBS BASE WORK: boot the packages under systemd.
#
# Called by the packages suite (tests/suites/packages.sh) after its chroot
# checks. Installs DEBS/*.deb with `apt-get install` into a fresh copy of
# the debootstrapped Debian 12 root BASE, makes the PKI and an
# administrator's certificate there with the packaged CLI (as
# docs/install.md's "A controller" does), adds the test unit
# ff-boottest.service (tests/packages/guest.sh), turns the root into an ext4
# image (mkfs.ext4 -d) and boots two qemu (TCG) machines from it, each with
# Debian's Linux 6.1 (the kernel suite's, from tests/kernel/setup.sh), a
# small busybox initramfs (tests/packages/init) that loads the virtio, ext4
# and FUSE modules and switch_roots into systemd:
#
#   ctl  10.9.0.1  ferrofab-controller.service + ferrofab-agent-storage.service
#   ws   10.9.0.2  ferrofab-agent-workstation.service
#
# Two machines because the two agent units conflict by design (one agent
# per node, one /etc/ferrofab/agent.toml). They share a point-to-point link
# (qemu's dgram netdev over two UDP ports on the host's loopback); each
# boots the image with snapshot=on, so the image stays untouched. Prints
# the guests' "FFB" result lines, and fails if a check failed, a guest
# did not finish within FF_BOOT_TIMEOUT seconds (default 480) or qemu is
# missing. The initramfs is cached in WORK/boot (rebuilt when init or the
# kernel changes).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
DEBS=${1:?usage: boot.sh DEBS BASE WORK}
BASE=${2:?usage: boot.sh DEBS BASE WORK}
W=${3:?usage: boot.sh DEBS BASE WORK}/boot
TIMEOUT=${FF_BOOT_TIMEOUT:-480}
ROOT=$W/root
mkdir -p "$W"

die() { printf 'tests: error: boot: %s\n' "$*" >&2; exit 1; }
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# qemu, busybox-static, e2fsprogs, cpio and the kernel (cached).
FF_SETUP_QUIET=1 "$repo/tests/kernel/setup.sh" || die "tests/kernel/setup.sh failed"
# shellcheck source=/dev/null
. "${FERROFAB_TEST_CACHE:-$repo/tests/.cache}/kernel/current.env"
for c in qemu-system-x86_64 mkfs.ext4 cpio gzip modprobe chroot python3; do
    command -v "$c" >/dev/null || die "'$c' not found"
done
file_static() { ! ldd "$1" >/dev/null 2>&1; }
file_static /bin/busybox || die "/bin/busybox is not static (install busybox-static)"
KERNEL=$FF_VMLINUZ
[ -z "${FF_VMLINUX:-}" ] || [ ! -f "$FF_VMLINUX" ] || KERNEL=$FF_VMLINUX

# ---------------------------------------------------------- initramfs

# Modules /init loads, in this order with their dependencies first. What
# the kernel has built in (virtio core? ext4? fuse?) modprobe resolves to
# nothing, so the list stays right for another Debian kernel.
MODULES=(virtio_pci virtio_blk virtio_net crc32c_generic ext4 fuse)
initrd=$W/initrd.img
key=$( (cat "$here/init" /bin/busybox | sha256sum; echo "$FF_KVER ${MODULES[*]}") | sha256sum | cut -c1-16)
if [ "$(cat "$initrd.key" 2>/dev/null)" != "$key" ]; then
    say "packages: boot initramfs (busybox, ${MODULES[*]} of $FF_KVER)"
    st=$W/initrd.stage
    rm -rf "$st" && mkdir -p "$st/bin" "$st/modules" "$st/proc" "$st/sys" "$st/dev" "$st/newroot"
    cp /bin/busybox "$st/bin/busybox"
    install -m 0755 "$here/init" "$st/init"
    for m in "${MODULES[@]}"; do
        modprobe -d "$FF_KROOT" -S "$FF_KVER" --show-depends "$m" \
            || die "module $m not found in $FF_KVER"
    done | sed -n 's/^insmod \([^ ]*\.ko[^ ]*\).*/\1/p' | awk '!seen[$0]++' >"$W/modules.list"
    while read -r ko; do
        cp "$ko" "$st/modules/"
        basename "$ko" >>"$st/modules/order"
    done <"$W/modules.list"
    (cd "$st" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    echo "$key" >"$initrd.key"
    rm -rf "$st"
fi

# ---------------------------------------------------------- the root

cleanup() {
    umount "$ROOT/proc" 2>/dev/null || true
    local p
    for p in "${QPIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
QPIDS=()
trap cleanup EXIT

t0=$SECONDS
say "packages: installing the .debs into a fresh root for the boot test"
umount "$ROOT/proc" 2>/dev/null || true
rm -rf "$ROOT"
cp -a "$BASE" "$ROOT"
mount -t proc proc "$ROOT/proc"
mkdir -p "$ROOT/tmp/debs"
cp "$DEBS"/*.deb "$ROOT/tmp/debs/"
inroot() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 /bin/sh -c "$*"; }
inroot "cd /tmp/debs && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./*.deb && apt-get clean && rm -r /tmp/debs" \
    >"$W/install.log" 2>&1 || { cat "$W/install.log" >&2; die "apt-get install ./*.deb failed"; }

# The PKI and the admin's client configuration, as docs/install.md does.
inroot "runuser -u ferrofab -- ferrofab pki init --dir /etc/ferrofab/pki --san ctl.test >/dev/null &&
    runuser -u ferrofab -- ferrofab pki issue --dir /etc/ferrofab/pki --identity admin --out /tmp/admin >/dev/null &&
    install -d -m 0700 /root/.config/ferrofab &&
    install -m 0600 /tmp/admin/* /etc/ferrofab/pki/ca.crt /root/.config/ferrofab/ && rm -r /tmp/admin &&
    printf '%s\n' 'endpoints = [\"https://ctl.test:7443\"]' '[tls]' 'ca = \"ca.crt\"' 'cert = \"admin.crt\"' 'key = \"admin.key\"' \
        >/root/.config/ferrofab/client.toml" >"$W/pki.log" 2>&1 \
    || { cat "$W/pki.log" >&2; die "making the PKI in the root failed"; }
umount "$ROOT/proc"

printf '127.0.0.1 localhost\n10.9.0.1 ctl.test ctl\n10.9.0.2 ws\n' >"$ROOT/etc/hosts"
# A machine-id so that systemd does not take this for a first boot
# (each machine gets its own with systemd.machine_id= below).
echo 0123456789abcdef0123456789abcdef >"$ROOT/etc/machine-id"
install -m 0755 "$here/guest.sh" "$ROOT/usr/local/sbin/ff-boottest"
cat >"$ROOT/etc/systemd/system/ff-boottest.service" <<'EOF'
[Unit]
Description=ferrofab packages suite: controller and agents from the packaged units
After=multi-user.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/ff-boottest
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
ln -sf ../ff-boottest.service "$ROOT/etc/systemd/system/multi-user.target.wants/ff-boottest.service"
# Nothing else competes for the emulated CPU: no gettys (the console is
# the test's), no periodic jobs.
for u in getty@tty1.service serial-getty@ttyS0.service apt-daily.timer apt-daily-upgrade.timer \
    dpkg-db-backup.timer man-db.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$ROOT/etc/systemd/system/$u"
done

img=$W/root.img
rm -f "$img"
mkfs.ext4 -q -F -L ffroot -d "$ROOT" "$img" 1536M >"$W/mkfs.log" 2>&1 \
    || { cat "$W/mkfs.log" >&2; die "mkfs.ext4 -d failed"; }
say "packages: root image ready in $((SECONDS - t0))s ($(du -h "$img" | cut -f1) used)"

# ---------------------------------------------------------- two machines

udp_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p1=$(udp_port)
p2=$(udp_port)
while [ "$p2" = "$p1" ]; do p2=$(udp_port); done

# machine NAME IP MAC LOCALPORT REMOTEPORT MACHINE-ID
machine() {
    local name=$1 ip=$2 mac=$3 lport=$4 rport=$5 mid=$6
    : >"$W/$name.log"
    qemu-system-x86_64 -accel tcg -cpu max -smp 1 -m 768 \
        -nodefaults -no-user-config -display none -no-reboot \
        -serial "file:$W/$name.log" \
        -kernel "$KERNEL" -initrd "$initrd" \
        -append "console=ttyS0 quiet panic=-1 8250.nr_uarts=1 random.trust_cpu=on ff.ip=$ip/24 ff.role=$name systemd.hostname=$name systemd.machine_id=$mid systemd.show_status=false" \
        -drive "file=$img,format=raw,if=virtio,snapshot=on" \
        -netdev "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=$lport,remote.type=inet,remote.host=127.0.0.1,remote.port=$rport" \
        -device "virtio-net-pci,netdev=n0,romfile=,mac=$mac" \
        >"$W/$name.qemu.log" 2>&1 &
    QPIDS+=($!)
}

say "packages: booting ctl (controller, storage agent) and ws (workstation agent) under qemu (TCG)"
t0=$SECONDS
machine ctl 10.9.0.1 52:54:00:f0:09:01 "$p1" "$p2" 0000000000000000000000000000c711
machine ws 10.9.0.2 52:54:00:f0:09:02 "$p2" "$p1" 00000000000000000000000000000a55
declare -A started=()
while :; do
    for n in ctl ws; do
        if [ -z "${started[$n]:-}" ] && grep -aq 'FFB start' "$W/$n.log"; then
            started[$n]=1
            say "packages: $n booted in $((SECONDS - t0))s: $(grep -a 'FFB start' "$W/$n.log" | tr -d '\r' | sed 's/.*FFB start role=[a-z]* //')"
        fi
    done
    alive=0
    for p in "${QPIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 1 ] || break
    if [ $((SECONDS - t0)) -ge "$TIMEOUT" ]; then
        say "packages: the machines did not finish within ${TIMEOUT}s; killing qemu"
        break
    fi
    sleep 1
done
cleanup
trap - EXIT
say "packages: both machines done in $((SECONDS - t0))s"

fail=0
for n in ctl ws; do
    echo "  [$n]"
    tr -d '\r' <"$W/$n.log" | grep -a 'FFB ' | grep -av 'FFB \(start\|done\) ' | sed 's/.*FFB /  /'
    tr -d '\r' <"$W/$n.log" | grep -q "FFB done role=$n fails=0$" || {
        fail=1
        grep -aq 'FFB done' "$W/$n.log" || {
            echo "  $n did not finish; the end of its console ($W/$n.log):"
            tail -n 40 "$W/$n.log" | sed 's/^/    /'
            cat "$W/$n.qemu.log"
        }
    }
done
[ "$fail" = 0 ] || die "the boot test failed (above; consoles in $W/ctl.log and $W/ws.log)"
