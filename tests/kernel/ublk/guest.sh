#!/bin/sh
# Guest side of tests/kernel/ublk.sh (busybox ash, Linux 6.12): our target
# serves a namespace on the guest's tmpfs, `ferrofab-nvmeof connect
# --expose-block` exposes it as /dev/ublkb0, and the device gets an ext4
# file system, a file with a known pattern, a disconnect and a reconnect;
# then the target is killed under the device to check that a read fails
# (EIO) instead of hanging, and that the device is gone afterwards.
# With BENCH=1 the same boot then runs the comparison of bench_ublk.sh.
. /usr/lib/ferrofab/ff-lib.sh
set -u
B=ferrofab-nvmeof
NQN=nqn.2026-12.io.ferrofab:ublk
T=/tmp/t
mkdir -p $T/run /mnt/u
SIZE_MIB=${SIZE_MIB:-128}

# On failure, show what the server said.
trap 'rc=$?; [ $rc = 0 ] || { echo "--- connect log (tail)"; tail -30 $T/conn.log; echo "--- target log (tail)"; tail -10 $T/serve.log; } >&2' EXIT

modprobe ublk_drv || ff_die "modprobe ublk_drv"
[ -c /dev/ublk-control ] || ff_die "no /dev/ublk-control after loading ublk_drv"
ff_log "ublk_drv loaded on $(uname -r)"

cat >$T/serve.toml <<EOF
[[listener]]
address = "127.0.0.1:4420"
[[subsystem]]
nqn = "$NQN"
allow_any_host = true
[[subsystem.namespace]]
nsid = 1
path = "$T/ns1.img"
size = "${SIZE_MIB}MiB"
EOF

start_target() {
    $B serve -c $T/serve.toml >$T/serve.out 2>>$T/serve.log &
    SPID=$!
    i=0
    while ! grep -q ready $T/serve.out 2>/dev/null; do
        i=$((i + 1)); [ $i -gt 300 ] && ff_die "target did not start: $(tail -3 $T/serve.log)"
        sleep 0.1
    done
}

# connect_block [ARGS...]: connect with --expose-block in the background;
# sets CPID and DEV.
connect_block() {
    : >$T/conn.out
    $B connect -a 127.0.0.1 -s 4420 -n $NQN --expose-block --run-dir $T/run "$@" \
        >$T/conn.out 2>>$T/conn.log &
    CPID=$!
    i=0
    while ! grep -q "exposed at" $T/conn.out; do
        i=$((i + 1))
        if [ $i -gt 600 ] || ! kill -0 $CPID 2>/dev/null; then
            cat $T/conn.log >&2
            ff_die "connect --expose-block printed no device"
        fi
        sleep 0.1
    done
    DEV=$(sed -n 's/.*exposed at \([^ ]*\) .*/\1/p' $T/conn.out | head -1)
    [ -b "$DEV" ] || ff_die "$DEV is not a block device"
}

# disconnect: SIGTERM the connect process and wait for it.
disconnect() {
    kill -TERM $CPID
    wait $CPID
    rc=$?
    [ $rc = 0 ] || { tail -20 $T/conn.log >&2; ff_die "connect exited with $rc after SIGTERM"; }
}

gone() { # the block device and its char device are gone
    n=${DEV#/dev/ublkb}
    [ ! -e /sys/block/ublkb$n ] && [ ! -e /dev/ublkc$n ] && [ ! -e /sys/class/ublk-char/ublkc$n ]
}

start_target
connect_block
ff_log "PASS: namespace exposed at $DEV"
sectors=$(cat /sys/block/${DEV#/dev/}/size)
[ "$sectors" = $((SIZE_MIB * 2048)) ] || ff_die "$DEV has $sectors sectors, want $((SIZE_MIB * 2048))"
ff_log "PASS: $DEV has the namespace's size ($sectors sectors)"

ff_run mkfs.ext4 -q -F "$DEV"
ff_run mount -t ext4 "$DEV" /mnt/u
dd if=/dev/urandom of=$T/pattern bs=1M count=8 2>/dev/null
want=$(md5sum <$T/pattern | cut -d' ' -f1)
ff_run cp $T/pattern /mnt/u/pattern
ff_run sync
ff_run umount /mnt/u
ff_log "PASS: mkfs.ext4, mount, 8 MiB file written, unmounted"
disconnect
gone || ff_die "$DEV still present after connect exited"
ff_log "PASS: disconnect removed $DEV and its char device"

connect_block
ff_run mount -t ext4 "$DEV" /mnt/u
got=$(md5sum </mnt/u/pattern | cut -d' ' -f1)
[ "$got" = "$want" ] || ff_die "pattern differs after reconnect: $got != $want"
ff_run umount /mnt/u
ff_run e2fsck -fn "$DEV"
ff_log "PASS: after a reconnect the file reads back identical and e2fsck is clean"
disconnect
gone || ff_die "$DEV still present after the second disconnect"
if grep -E "WARN|ERROR" $T/conn.log >&2; then
    ff_die "the server refused or failed requests (above)"
fi
ff_log "PASS: no request refused or failed (mkfs discards, flushes, reads, writes)"

# Raw direct I/O in large requests (the buffers that travel: a write's
# buffer moved into the NVMe command, a full-size read's buffer handed to
# the kernel), mixed with small ones, read back and compared.
connect_block
dd if=/dev/urandom of=$T/raw bs=1M count=6 2>/dev/null
ff_run dd if=$T/raw of="$DEV" bs=1M seek=8 oflag=direct conv=fsync 2>/dev/null
ff_run dd if=$T/raw of="$DEV" bs=4k count=16 seek=100 oflag=direct 2>/dev/null
rawsum=$(md5sum <$T/raw | cut -d' ' -f1)
for bs in 1M 64k; do
    n=$((6 * 1048576 / $(echo $bs | sed 's/M/*1048576/;s/k/*1024/' | awk -F'*' '{print $1 * $2}')))
    skip=$((8 * 1048576 / $(echo $bs | sed 's/M/*1048576/;s/k/*1024/' | awk -F'*' '{print $1 * $2}')))
    got=$(dd if="$DEV" bs=$bs skip=$skip count=$n iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
    [ "$got" = "$rawsum" ] || ff_die "direct read back in $bs requests differs"
done
got=$(dd if="$DEV" bs=4k skip=100 count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$got" = "$(head -c 65536 $T/raw | md5sum | cut -d' ' -f1)" ] || ff_die "4 KiB direct read back differs"
disconnect
gone || ff_die "$DEV still present after the raw-I/O round's disconnect"
if grep -E "WARN|ERROR" $T/conn.log >&2; then
    ff_die "the server refused or failed requests in the raw-I/O round (above)"
fi
ff_log "PASS: 6 MiB written with O_DIRECT in 1 MiB writes (512 KiB requests: the device's limit splits them) reads back identical in 1 MiB and 64 KiB reads; $DEV gone, nothing refused"

# A failing read path: kill the target under a connected device with a
# short ctrl-loss-tmo. The read must fail, not hang; connect then gives up
# and removes the device.
connect_block --ctrl-loss-tmo 3 --reconnect-delay 0.5
kill -KILL $SPID; wait $SPID 2>/dev/null
echo 3 >/proc/sys/vm/drop_caches
t0=$(date +%s)
# rc right after the dd: after an `if ... fi` $? is the if's own status.
timeout 90 dd if="$DEV" of=/dev/null bs=4096 count=1 skip=1000 2>$T/dd.err
rc=$?
t1=$(date +%s)
[ $rc != 0 ] || ff_die "read succeeded with the target gone"
# 124: timeout's own expiry; 143: dd ended by its SIGTERM.
[ $rc != 124 ] && [ $rc != 143 ] || ff_die "read hung (no answer in 90 s) with the target gone"
grep -qi "error" $T/dd.err || ff_die "read failed without an I/O error: $(cat $T/dd.err)"
ff_log "PASS: with the target gone a read fails in $((t1 - t0)) s: $(head -1 $T/dd.err)"
i=0
while kill -0 $CPID 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 600 ] && ff_die "connect did not give up after ctrl-loss-tmo"
    sleep 0.1
done
wait $CPID
gone || ff_die "$DEV still present after connect gave up"
ff_log "PASS: connect gave up after ctrl-loss-tmo and removed $DEV"
grep -q "ublk device removed" $T/conn.log || ff_die "no removal logged"

if [ "${BENCH:-0}" = 1 ]; then
    . /ferrofab/bench.sh
fi
ff_log "ublk: all checks passed"
exit 0
