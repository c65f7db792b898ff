#!/bin/sh
# Guest side of auth.sh, part 1: Linux 6.12's nvme-tcp host authenticates
# (DH-HMAC-CHAP) against ferrofab's built-in target on the host (10.0.2.2).
# One subsystem per case (hash x DH group x direction), set in CASES by the
# host with NQN_i, KEY_i (host secret), CKEY_i (controller secret or empty).
. /usr/lib/ferrofab/ff-lib.sh
set -u
T=10.0.2.2
BASE="transport=tcp,traddr=$T,trsvcid=$IO_PORT,hostnqn=$HOSTNQN,hostid=$HOSTID,nr_io_queues=2,ctrl_loss_tmo=5"

var() { eval "printf '%s' \"\${$1}\""; }

# try OPTS: connect; prints the controller name, or fails with the kernel's answer.
try() {
    _out=$( { printf '%s' "$1" >&3 && cat <&3; } 3<>/dev/nvme-fabrics 2>&1 ) || { echo "$_out"; return 1; }
    printf '%s\n' "$_out" | sed -n 's/.*instance=\([0-9]*\).*/nvme\1/p'
}

refused() { # WHAT OPTS
    if _c=$(try "$2"); then
        ff_die "$1: connect succeeded ($_c)"
    fi
    ff_log "refused as it must be ($1): $_c"
}

verify_io() { # DEV SEED
    dd if=/pat of="$1" bs=64k seek=$(($2 * 4)) conv=fsync 2>/dev/null || ff_die "write to $1 failed"
    sync; echo 3 >/proc/sys/vm/drop_caches
    dd if="$1" of=/tmp/back bs=64k count=16 skip=$(($2 * 4)) 2>/dev/null || ff_die "read of $1 failed"
    cmp /tmp/back /pat || ff_die "read back differs on $1"
}

for i in $CASES; do
    nqn=$(var NQN_$i) key=$(var KEY_$i) ckey=$(var CKEY_$i) what=$(var WHAT_$i)
    opts="$BASE,nqn=$nqn,dhchap_secret=$key"
    [ -n "$ckey" ] && opts="$opts,dhchap_ctrl_secret=$ckey"
    ff_log "case $i: $what"
    c=$(try "$opts") || ff_die "case $i ($what): connect failed: $c"
    dev=$(ff_nvme_wait_ns "$c")
    verify_io "$dev" "$i"
    ff_log "case $i ($what): authenticated, 1 MiB written and read back on $dev"
    if [ "$i" = "$FS_CASE" ]; then
        ff_run mkfs.ext4 -q -F "$dev"
        mkdir -p /mnt/fs
        ff_run mount -t ext4 "$dev" /mnt/fs
        dd if=/pat of=/mnt/fs/data bs=64k 2>/dev/null || ff_die "file write failed"
        ff_run umount /mnt/fs
        ff_run e2fsck -fn "$dev"
        ff_run mount -t ext4 "$dev" /mnt/fs
        cmp /mnt/fs/data /pat || ff_die "file differs after remount"
        ff_run umount /mnt/fs
        ff_log "case $i: mkfs, write, fsck, verify after authentication"
    fi
    if [ "$i" = "$REAUTH_CASE" ]; then
        # Re-authentication on live queues: writing the secret to sysfs makes
        # the host run a new transaction on every queue (with the same key
        # here; the target must accept a new Negotiate on an authenticated
        # queue).
        ff__write "/sys/class/nvme/$c/dhchap_secret" "$key"
        sleep 2
        verify_io "$dev" 9
        grep -q live "/sys/class/nvme/$c/state" || ff_die "controller not live after re-authentication: $(cat /sys/class/nvme/$c/state)"
        ff_log "case $i: re-authenticated on a live controller, I/O still fine"
    fi
    ff_nvme_disconnect "$c"
done

nqn=$(var NQN_1)
refused "wrong host secret" "$BASE,nqn=$nqn,dhchap_secret=$BADKEY"
refused "no secret on a subsystem that requires authentication" "$BASE,nqn=$nqn"
nqn=$(var NQN_$BIDI_CASE) key=$(var KEY_$BIDI_CASE)
refused "wrong controller secret (the target cannot prove itself)" "$BASE,nqn=$nqn,dhchap_secret=$key,dhchap_ctrl_secret=$BADKEY"
ff_log "all authentication checks against the built-in target passed"
