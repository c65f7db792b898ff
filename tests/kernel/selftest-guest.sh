#!/bin/sh
# Guest half of tests/kernel/selftest.sh (busybox ash inside the qemu guest).
#
# Kernel nvmet target on a tmpfs file + kernel nvme-tcp host, both in this
# guest, talking over 127.0.0.1:4420:
#   * nvmet configured through configfs (explicit allowed host, buffered_io=1)
#   * connect through /dev/nvme-fabrics, data written/read back with dd + cmp
#     and checked against the backing file
#   * a host NQN that is not allowed must be refused
#   * nvme discover / list / id-ctrl (nvme-cli), mkfs.ext4 + e2fsck + mount
#   * reconnect with hdr_digest,data_digest (crc32c) and verify data again
#   * then announces FERROFAB-GUEST-READY and keeps the target up until the
#     host, which probes it through the hostfwd port, releases the guest.
# Environment (from run-guest.sh --env): FF_SELFTEST_MIB (data size, default 4),
# FF_SELFTEST_RELEASE_PORT (guest port the host connects to; empty = no wait).
. /usr/lib/ferrofab/ff-lib.sh

MIB=${FF_SELFTEST_MIB:-4}
NQN=nqn.2014-08.io.ferrofab:selftest
IMG=/tmp/ff-selftest.img
T0=$(cut -d' ' -f1 /proc/uptime)

ff_log "args: $*"
[ "$1" = "arg one" ] && [ "$2" = "it's two" ] || ff_die "script arguments not passed through: [$1] [$2]"
[ "${FF_SELFTEST_QUOTED:-}" = 'a "quoted" $value; `x`' ] \
    || ff_die "environment value mangled: [${FF_SELFTEST_QUOTED:-}]"

# --bin: a host binary (with its shared libraries) must run here.
ff_run host-sha256sum /usr/lib/ferrofab/ff-lib.sh >/tmp/a
sha256sum /usr/lib/ferrofab/ff-lib.sh >/tmp/b
cmp /tmp/a /tmp/b || ff_die "host sha256sum and busybox sha256sum disagree"

for m in nvme-tcp nvme-fabrics nvmet nvmet-tcp crc32c_generic; do
    ff_run modprobe "$m"
done

# ---------------------------------------------------------------- target
ff_run truncate -s 64M "$IMG"
ff_nvmet_subsys "$NQN" "$FF_HOSTNQN"
ff_nvmet_ns "$NQN" 1 "$IMG" 1
ff_nvmet_port 1 0.0.0.0 4420 tcp
ff_nvmet_link 1 "$NQN"
ff_log "nvmet: $NQN ns1=$IMG (64 MiB, buffered_io) on tcp 0.0.0.0:4420, host $FF_HOSTNQN"

# ---------------------------------------------------------------- host: plain
CONN="transport=tcp,traddr=127.0.0.1,trsvcid=4420,nqn=$NQN,hostnqn=$FF_HOSTNQN,hostid=$FF_HOSTID"
CTRL=$(ff_nvme_connect "$CONN") || exit 1
DEV=$(ff_nvme_wait_ns "$CTRL" 30) || exit 1
ff_log "connected: $CTRL -> $DEV ($(cat /sys/class/nvme/"$CTRL"/transport) $(cat /sys/class/nvme/"$CTRL"/address))"
SECTORS=$(cat "/sys/block/${DEV#/dev/}/size")
[ "$SECTORS" -eq $((64 * 2048)) ] || ff_die "$DEV has $SECTORS sectors, expected $((64 * 2048))"

ff_run dd if=/dev/urandom of=/tmp/pattern bs=1M count="$MIB" status=none
ff_run dd if=/tmp/pattern of="$DEV" bs=1M oflag=direct conv=fsync status=none
ff_run dd if="$DEV" of=/tmp/readback bs=1M count="$MIB" iflag=direct status=none
cmp /tmp/pattern /tmp/readback || ff_die "read-back data differs from what was written"
# the target's backing file must hold the same bytes
dd if="$IMG" of=/tmp/backing bs=1M count="$MIB" status=none
cmp /tmp/pattern /tmp/backing || ff_die "nvmet backing file differs from what was written"
ff_log "dd write/read-back of $MIB MiB OK ($(md5sum </tmp/pattern | cut -d' ' -f1))"

# ---------------------------------------------------------------- nvme-cli
ff_log "nvme discover -t tcp -a 127.0.0.1 -s 4420:"
nvme discover -t tcp -a 127.0.0.1 -s 4420 >/tmp/disc 2>&1 || { cat /tmp/disc; ff_die "nvme discover failed"; }
cat /tmp/disc
grep -q "subnqn: *$NQN" /tmp/disc || ff_die "discovery log does not list $NQN"
ff_log "nvme list:"
nvme list || ff_die "nvme list failed"
nvme id-ctrl "/dev/$CTRL" >/tmp/idctrl || ff_die "nvme id-ctrl failed"
grep -E '^(mn|subnqn|ioccsz|maxcmd) ' /tmp/idctrl

# ---------------------------------------------------------------- e2fsprogs + ext4
ff_run mkfs.ext4 -q -F "$DEV"
ff_run e2fsck -f -n "$DEV"
ff_run modprobe ext4
mkdir -p /mnt/nvme
ff_run mount -t ext4 "$DEV" /mnt/nvme
cp /tmp/pattern /mnt/nvme/pattern
ff_run umount /mnt/nvme
ff_run mount -t ext4 -o ro "$DEV" /mnt/nvme
cmp /tmp/pattern /mnt/nvme/pattern || ff_die "file on ext4 differs after remount"
ff_run umount /mnt/nvme
ff_log "mkfs.ext4/e2fsck/ext4 mount OK"

ff_run nvme disconnect -n "$NQN"
sleep 0.2
[ ! -e "/sys/class/nvme/$CTRL" ] || ff_die "$CTRL still present after nvme disconnect"

# ---------------------------------------------------------------- access control
BAD="transport=tcp,traddr=127.0.0.1,trsvcid=4420,nqn=$NQN,hostnqn=nqn.2014-08.io.ferrofab:not-allowed"
if ( exec 3<>/dev/nvme-fabrics && printf '%s' "$BAD" >&3 ) 2>/dev/null; then
    ff_nvme_disconnect_all
    ff_die "a host that is not allowed could connect"
fi
ff_log "not-allowed host refused, as expected"

# ---------------------------------------------------------------- digests
CTRL=$(ff_nvme_connect "$CONN,hdr_digest,data_digest") || exit 1
DEV=$(ff_nvme_wait_ns "$CTRL" 30) || exit 1
ff_log "connected with hdr_digest,data_digest: $CTRL -> $DEV"
ff_run dd if=/dev/urandom of=/tmp/pattern2 bs=1M count="$MIB" status=none
ff_run dd if=/tmp/pattern2 of="$DEV" bs=1M seek=8 oflag=direct conv=fsync status=none
ff_run dd if="$DEV" of=/tmp/readback2 bs=1M skip=8 count="$MIB" iflag=direct status=none
cmp /tmp/pattern2 /tmp/readback2 || ff_die "digest connection: read-back data differs"
grep -q crc32c /proc/crypto || ff_die "no crc32c in /proc/crypto"
ff_log "digest I/O OK ($(grep -A2 'name *: crc32c' /proc/crypto | sed -n 's/^driver *: //p' | head -n1))"
ff_run ff_nvme_disconnect "$CTRL"

T1=$(cut -d' ' -f1 /proc/uptime)
ff_log "in-guest checks took $(echo "$T0 $T1" | awk '{printf "%.2f", $2 - $1}')s"

# ---------------------------------------------------------------- host probe
if [ -n "${FF_SELFTEST_RELEASE_PORT:-}" ]; then
    # Target stays up for the host, which reaches it through --hostfwd.
    ff_ready nvmet-up
    ff_wait_release "$FF_SELFTEST_RELEASE_PORT" 120
    ff_log "released by the host"
fi

ff_nvmet_clear
[ -z "$(ls /sys/kernel/config/nvmet/subsystems)" ] || ff_die "nvmet configuration not cleared"
ff_log "selftest guest part PASSED"
exit 0
