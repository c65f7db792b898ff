#!/usr/bin/env bash
# tests/kernel/initiator-vs-nvmet.sh - the built-in NVMe/TCP initiator
# against the Linux 6.1 kernel target (nvmet-tcp) in a qemu guest.
#
# Usage: initiator-vs-nvmet.sh [--mib N] [--timeout SEC] [--keep-log]
#
# The guest exports a 128 MiB file on tmpfs (buffered_io=1) as namespace 1
# of a subsystem that allows only one host NQN, on port 4420 (forwarded to
# 127.0.0.1:<random>). The host side then checks, in order:
#   1. `ferrofab-nvmeof discover` (table and --json) lists the subsystem;
#   2. write/read/verify N MiB (default 64) with 4 queues at QD 32, sizes
#      4 KiB (in-capsule) to 256 KiB (R2T), without digests;
#   3. the same with header and data digests;
#   4. Connect with a host NQN that is not allowed fails with a clear message;
#   5. `ferrofab-nvmeof connect` in the background, `disconnect -n` stops it;
#   6. the guest grows the file and revalidates the namespace: the resize
#      arrives through the asynchronous event and the new space is usable;
#   7. the guest unlinks the subsystem from the port for 6 s and relinks it
#      while 8 threads write and verify: reconnect, no failed or lost I/O.
# Steps 6, 7 and the end are coordinated through a second forwarded port:
# the guest waits in `nc -l` for each step and the host connects to it.
#
# Needs the qemu harness (run-guest.sh, lib.sh) next to this script or in
# $FF_KERNEL_HARNESS. Builds the binaries with cargo (CARGO_TARGET_DIR is
# honoured). Exit status 0 when everything passed; the last line is
# "initiator-vs-nvmet: N passed, N failed".
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
HARNESS=${FF_KERNEL_HARNESS:-$HERE}
[ -x "$HARNESS/run-guest.sh" ] || {
    echo "initiator-vs-nvmet: no run-guest.sh in $HARNESS (set FF_KERNEL_HARNESS)" >&2
    exit 2
}
# shellcheck source=/dev/null
. "$HARNESS/lib.sh"

MIB=64
TIMEOUT=1500
KEEP_LOG=0
while [ $# -gt 0 ]; do
    case "$1" in
        --mib) MIB=${2:?}; shift 2;;
        --timeout) TIMEOUT=${2:?}; shift 2;;
        --keep-log) KEEP_LOG=1; shift;;
        -h|--help) sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0;;
        *) echo "initiator-vs-nvmet: unknown argument '$1'" >&2; exit 2;;
    esac
done

NQN=nqn.2026-11.io.ferrofab:interop
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:6f1c3a52-0000-4000-8000-00000000f00d
HOSTID=6f1c3a52-0000-4000-8000-00000000f00d
OTHERNQN=nqn.2026-11.io.ferrofab:not-allowed
SIZE_MB=128
GROWN_MB=192

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "initiator-vs-nvmet: PASS: $*"; }
# The driver's result line (its log goes to stderr, mixed in).
result() { grep -E '^(io|grow|outage|denied): ' <<<"$1" | tail -n1; }
fail() { FAILED=$((FAILED + 1)); echo "initiator-vs-nvmet: FAIL: $*" >&2; }

echo "initiator-vs-nvmet: building"
(cd "$REPO" && cargo build -q -j1 --release -p ferrofab-nvmeof \
    --bin ferrofab-nvmeof --example initiator_interop)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
CLI=$TARGET_DIR/release/ferrofab-nvmeof
DRIVER=$TARGET_DIR/release/examples/initiator_interop

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"; [ -n "${GPID:-}" ] && kill "$GPID" 2>/dev/null; true' EXIT
GUEST=$WORK/guest.sh
cat >"$GUEST" <<GUEST_EOF
#!/bin/sh
. /usr/lib/ferrofab/ff-lib.sh
NQN=$NQN
# One host step: block until the host connects to port 5555.
step() {
    ff_log "waiting for the host: \$1"
    echo ferrofab-released | timeout 900 nc -l -p 5555 >/dev/null 2>&1 \
        || ff_die "the host never released step \$1"
    ff_log "host released: \$1"
}
mkdir -p /mnt/ns && mount -t tmpfs -o size=512m tmpfs /mnt/ns || ff_die "tmpfs"
dd if=/dev/zero of=/mnt/ns/ns1.img bs=1M count=0 seek=$SIZE_MB 2>/dev/null || ff_die "image"
ff_nvmet_subsys \$NQN $HOSTNQN
ff_nvmet_ns \$NQN 1 /mnt/ns/ns1.img 1
ff_nvmet_port 1 0.0.0.0 4420
ff_nvmet_link 1 \$NQN
ff_ready
step grow
dd if=/dev/zero of=/mnt/ns/ns1.img bs=1M count=0 seek=$GROWN_MB 2>/dev/null || ff_die "grow"
echo 1 >/sys/kernel/config/nvmet/subsystems/\$NQN/namespaces/1/revalidate_size || ff_die "revalidate"
ff_log "grew namespace 1 to $GROWN_MB MiB"
step outage
rm /sys/kernel/config/nvmet/ports/1/subsystems/\$NQN || ff_die "unlink"
ff_log "port 1 no longer serves \$NQN"
sleep 6
ff_nvmet_link 1 \$NQN
ff_log "port 1 serves \$NQN again"
step done
exit 0
GUEST_EOF

GPORT=$(ff_free_port)
RPORT=$(ff_free_port)
LOG=$WORK/console.log
"$HARNESS/run-guest.sh" --script "$GUEST" --log "$LOG" --quiet --timeout "$TIMEOUT" \
    --hostfwd "tcp:127.0.0.1:$GPORT-:4420" --hostfwd "tcp:127.0.0.1:$RPORT-:5555" \
    >"$WORK/runner.out" 2>&1 &
GPID=$!
if ! ff_wait_for_log "$LOG" '^FERROFAB-GUEST-READY' 300 "$GPID"; then
    tail -n 40 "$LOG" "$WORK/runner.out" >&2 || true
    exit 1
fi
ADDR=127.0.0.1:$GPORT
RELEASE=127.0.0.1:$RPORT
ID=(--hostnqn "$HOSTNQN" --hostid "$HOSTID")
DRV=(env NO_COLOR=1 "$DRIVER" --addr "$ADDR" --nqn "$NQN" --hostnqn "$HOSTNQN" --hostid "$HOSTID")

# 1. discovery
if out=$("$CLI" discover -a 127.0.0.1 -s "$GPORT" "${ID[@]}" 2>&1) && grep -q "$NQN" <<<"$out"; then
    pass "discover lists $NQN"; echo "$out"
else
    fail "discover: $out"
fi
if out=$("$CLI" discover -a 127.0.0.1 -s "$GPORT" "${ID[@]}" --json 2>&1) \
        && grep -q "\"subnqn\": \"$NQN\"" <<<"$out"; then
    pass "discover --json"
else
    fail "discover --json: $out"
fi

# 2./3. data
if out=$("${DRV[@]}" io --mib "$MIB" --qd 32 2>&1); then pass "$(result "$out")"; else fail "io: $out"; fi
if out=$("${DRV[@]}" --digests io --mib "$MIB" --qd 32 2>&1); then pass "$(result "$out")"; else fail "io with digests: $out"; fi

# 4. host not allowed
if out=$(env NO_COLOR=1 "$DRIVER" --addr "$ADDR" --nqn "$NQN" --hostnqn "$OTHERNQN" denied 2>&1) \
        && grep -q "host $OTHERNQN not allowed" <<<"$out"; then
    pass "$(result "$out")"
else
    fail "not-allowed host: $out"
fi
if out=$("$CLI" connect -a 127.0.0.1 -s "$GPORT" -n "$NQN" --hostnqn "$OTHERNQN" \
        --hostid "$HOSTID" --run-dir "$WORK/run" 2>&1); then
    fail "CLI connect as a not-allowed host succeeded"
elif grep -q "not allowed" <<<"$out"; then
    pass "CLI: $out"
else
    fail "CLI connect as a not-allowed host: $out"
fi

# 5. CLI connect / disconnect
"$CLI" connect -a 127.0.0.1 -s "$GPORT" -n "$NQN" "${ID[@]}" --nr-io-queues 2 \
    --run-dir "$WORK/run" >"$WORK/connect.out" 2>"$WORK/connect.err" &
CPID=$!
for _ in $(seq 1 300); do
    grep -q '^NSID' "$WORK/connect.out" 2>/dev/null && break
    kill -0 "$CPID" 2>/dev/null || break
    sleep 0.1
done
if grep -q "^1 " "$WORK/connect.out" && ls "$WORK/run/"*.pid >/dev/null 2>&1 \
        && "$CLI" disconnect -n "$NQN" --run-dir "$WORK/run" && wait "$CPID"; then
    pass "CLI connect printed namespace 1 and disconnect stopped it"
    cat "$WORK/connect.out"
else
    fail "CLI connect/disconnect: $(cat "$WORK/connect.out" "$WORK/connect.err")"
    kill "$CPID" 2>/dev/null || true
fi

# 6. grow through the AEN
if out=$("${DRV[@]}" grow --release "$RELEASE" --expect-bytes $((GROWN_MB << 20)) 2>&1); then
    pass "$(result "$out")"
else
    fail "grow: $out"
fi

# 7. outage within ctrl-loss-tmo
if out=$("${DRV[@]}" --ctrl-loss-tmo 60 outage --release "$RELEASE" --seconds 60 2>&1); then
    pass "$(result "$out")"
    grep -E "connection lost|reconnected|re-sending|kept" <<<"$out" | head -n 8 || true
else
    fail "outage: $out"
fi

ff_release_guest "$RPORT" 60 || fail "could not release the guest's last step"
RC=0
wait "$GPID" || RC=$?
GPID=
if [ "$RC" = 0 ]; then pass "guest script exited 0"; else
    fail "guest exit $RC"; tail -n 30 "$LOG" >&2 || true
fi
if [ "$KEEP_LOG" = 1 ] || [ "$FAILED" -gt 0 ]; then
    cp "$LOG" "$REPO/tests/.work-initiator-vs-nvmet.log" 2>/dev/null \
        && echo "initiator-vs-nvmet: console log kept in tests/.work-initiator-vs-nvmet.log"
fi
echo "initiator-vs-nvmet: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
