#!/bin/sh
# Guest side of the target interop test: Linux 6.1's own nvme-tcp host
# driver against ferrofab's built-in target on the host (10.0.2.2).
# The host test (run.py) serves control commands on $CTL_PORT.
. /usr/lib/ferrofab/ff-lib.sh
set -u
T=10.0.2.2
BASE="transport=tcp,traddr=$T,trsvcid=$IO_PORT,nqn=$NQN,hostnqn=$HOSTNQN,hostid=$HOSTID,nr_io_queues=2,reconnect_delay=1,ctrl_loss_tmo=60"

ctl() {
    _r=$(echo "$1" | nc "$T" "$CTL_PORT")
    [ "$_r" = ok ] || ff_die "host control '$1' failed: '$_r'"
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# verify DEV: the 16 MiB pattern at 0 and the 4 KiB pieces at 32 MiB + 8 KiB steps.
verify() {
    drop_caches
    dd if="$1" of=/tmp/back bs=1M count=16 2>/dev/null || ff_die "read back failed"
    cmp /tmp/back /pat1 || ff_die "16 MiB pattern mismatch"
    i=0
    while [ $i -lt 16 ]; do
        dd if="$1" of=/tmp/piece bs=4096 count=1 skip=$((8192 + i * 2)) 2>/dev/null || ff_die "piece read failed"
        dd if=/pat2 of=/tmp/want bs=4096 count=1 skip=$i 2>/dev/null
        cmp /tmp/piece /tmp/want || ff_die "4 KiB piece $i mismatch"
        i=$((i + 1))
    done
    ff_log "verified 16 MiB + 16 x 4 KiB on $1"
}

ff_log "1. a host that is not on the allow-list is refused at Connect"
if _out=$( { printf '%s' "transport=tcp,traddr=$T,trsvcid=$IO_PORT,nqn=$NQN,hostnqn=$BAD_HOSTNQN" >&3 && cat <&3; } 3<>/dev/nvme-fabrics 2>&1 ); then
    ff_die "Connect by $BAD_HOSTNQN succeeded: $_out"
fi
ff_log "refused: $_out"

ff_log "2. discovery on port $DISC_PORT"
nvme discover -t tcp -a "$T" -s "$DISC_PORT" -q "$HOSTNQN" >/tmp/disc 2>&1 || { cat /tmp/disc; ff_die "nvme discover failed"; }
cat /tmp/disc
grep -q "subnqn:.*$NQN" /tmp/disc || ff_die "discovery log does not list $NQN"
grep -q "trsvcid: *$IO_PORT" /tmp/disc || ff_die "discovery log does not list port $IO_PORT"
if nvme discover -t tcp -a "$T" -s "$DISC_PORT" -q "$BAD_HOSTNQN" 2>&1 | grep -q "$NQN"; then
    ff_die "discovery shows $NQN to a host that is not allowed"
fi

ff_log "3. connect without digests, write 1 MiB (R2T) and 4 KiB (in-capsule) I/O"
c=$(ff_nvme_connect "$BASE")
dev=$(ff_nvme_wait_ns "$c")
ff_log "controller $c, namespace $dev, $(cat /sys/block/${dev#/dev/}/size) sectors"
dd if=/pat1 of="$dev" bs=1M conv=fsync 2>/dev/null || ff_die "16 MiB write failed"
i=0
while [ $i -lt 16 ]; do
    dd if=/pat2 of="$dev" bs=4096 count=1 skip=$i seek=$((8192 + i * 2)) conv=fsync,notrunc 2>/dev/null \
        || ff_die "4 KiB write $i failed"
    i=$((i + 1))
done
verify "$dev"

ff_log "4. online grow becomes visible"
before=$(cat /sys/block/${dev#/dev/}/size)
ctl grow
i=0
while [ "$(cat /sys/block/${dev#/dev/}/size)" = "$before" ]; do
    i=$((i + 1))
    [ $i -le 100 ] || ff_die "size still $before sectors 10 s after the grow"
    sleep 0.1
done
ff_log "size went from $before to $(cat /sys/block/${dev#/dev/}/size) sectors in ~$((i / 10)).$((i % 10)) s"

ff_log "5. reconnect after the target process restarts"
ctl restart
verify "$dev"
dd if=/pat2 of="$dev" bs=64k count=1 seek=$((48 * 16)) conv=fsync 2>/dev/null || ff_die "write after restart failed"

ff_log "5b. mandatory features, firmware log, host ID and hostile lengths through nvme-cli"
for fid in 1 2 4 5; do
    nvme get-feature "/dev/$c" -f $fid -n 1 >/tmp/feat 2>&1 || { cat /tmp/feat; ff_die "get-feature $fid failed"; }
    cat /tmp/feat
done
ff_run nvme set-feature "/dev/$c" -f 4 -v 350
nvme get-feature "/dev/$c" -f 4 >/tmp/feat 2>&1 || ff_die "get-feature 4 after set failed"
grep -qi "0x0*15e" /tmp/feat || { cat /tmp/feat; ff_die "temperature threshold did not read back 350 K"; }
nvme fw-log "/dev/$c" >/tmp/fw 2>&1 || { cat /tmp/fw; ff_die "fw-log failed"; }
cat /tmp/fw
want=$(echo "$HOSTID" | tr -d '-')
got=$(nvme get-feature "/dev/$c" -f 0x81 -c 1 -b 2>/dev/null | od -An -tx1 | tr -d ' \n')
case "$got" in *"$want"*) ff_log "host identifier $want read back" ;; *) ff_die "host identifier: got '$got', want $want" ;; esac
if nvme admin-passthru "/dev/$c" --opcode=2 --cdw10=0xffff0002 --cdw11=0xffff --data-len=4096 --read >/tmp/pt 2>&1; then
    ff_die "Get Log Page with NUMD=FFFFFFFFh succeeded"
fi
cat /tmp/pt
grep -qi "invalid field" /tmp/pt || ff_die "NUMD=FFFFFFFFh: expected Invalid Field"
if nvme admin-passthru "/dev/$c" --opcode=2 --cdw10=0x007f0002 --data-len=4096 --read >/tmp/pt 2>&1; then
    ff_die "Get Log Page with NUMD disagreeing with the data length succeeded"
fi
cat /tmp/pt
grep -qi "sgl length invalid" /tmp/pt || ff_die "NUMD disagreeing with the data length: expected Data SGL Length Invalid"
ff_run nvme smart-log "/dev/$c"
verify "$dev"

ff_log "6. orderly disconnect"
ff_nvme_disconnect "$c"

ff_log "7. connect with header and data digests, SQ flow control off (C2HData SUCCESS)"
c=$(ff_nvme_connect "$BASE,hdr_digest,data_digest,disable_sqflow")
dev=$(ff_nvme_wait_ns "$c")
verify "$dev"
dd if=/pat1 of="$dev" bs=1M count=4 seek=64 conv=fsync 2>/dev/null || ff_die "write with digests failed"

ff_log "8. a filesystem: mkfs.ext4, mount, write, umount, fsck"
command -v mkfs.ext4 >/dev/null 2>&1 || ff_die "mkfs.ext4 is not in the guest"
ctl add-namespace
i=0
while :; do
    n2=$(ls /sys/class/nvme/"$c"/ | grep -E 'n2$' || true)
    [ -n "$n2" ] && break
    i=$((i + 1))
    [ $i -le 100 ] || ff_die "namespace 2 did not appear 10 s after it was added"
    sleep 0.1
done
fsdev=/dev/$(echo "$n2" | sed 's/^nvme\([0-9]*\)c[0-9]*n\([0-9]*\)$/nvme\1n\2/')
i=0
while [ ! -b "$fsdev" ]; do
    i=$((i + 1))
    [ $i -le 50 ] || ff_die "no block device $fsdev"
    sleep 0.1
done
ff_log "namespace added live: $fsdev"
ff_run mkfs.ext4 -q -F "$fsdev"
mkdir -p /mnt/fs
ff_run mount -t ext4 "$fsdev" /mnt/fs
dd if=/pat1 of=/mnt/fs/data bs=1M 2>/dev/null || ff_die "file write failed"
sync
ff_run umount /mnt/fs
ff_run e2fsck -fn "$fsdev"
ff_run mount -t ext4 "$fsdev" /mnt/fs
cmp /mnt/fs/data /pat1 || ff_die "file content mismatch after remount"
ff_run umount /mnt/fs
ff_nvme_disconnect "$c"
ff_log "all target interop checks passed"
