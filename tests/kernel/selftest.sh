#!/usr/bin/env bash
# tests/kernel/selftest.sh - end-to-end smoke test of the qemu guest harness.
#
# Usage: selftest.sh [--harness-checks] [--timeout SEC]
#
# Boots the Linux 6.1 guest with selftest-guest.sh, which configures the
# kernel nvmet target (configfs, tmpfs file, buffered_io) and connects the
# kernel nvme-tcp host to it over 127.0.0.1 (plain and with header/data
# digests), moves data with dd, runs nvme discover/list/id-ctrl, mkfs.ext4,
# e2fsck and an ext4 mount. Meanwhile the host side checks the --hostfwd
# path: it sends an NVMe/TCP ICReq to the guest's nvmet port through the
# forwarded port and validates the ICResp, then releases the guest.
# It also checks --bin (a host binary with shared libraries), --env quoting
# and script arguments.
#
# --harness-checks also verifies that run-guest.sh passes a non-zero guest exit
# code through, and that --timeout kills a hung guest with exit status 124
# (two more boots).
#
# Exit status 0 when everything passed. The last line is
# "kernel-selftest: N passed, N failed".
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

HARNESS_CHECKS=0
TIMEOUT=300
while [ $# -gt 0 ]; do
    case "$1" in
        --harness-checks) HARNESS_CHECKS=1; shift;;
        --timeout) TIMEOUT=${2:?--timeout needs a value}; shift 2;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0;;
        *) echo "selftest.sh: unknown argument '$1'" >&2; exit 2;;
    esac
done

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "selftest: PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "selftest: FAIL: $*" >&2; }

now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
T0=$(now_ms)

# Install/unpack up front so that the timings below are about the guest.
"$HERE/setup.sh"

LOGDIR=$REPO/tests/.work/kernel
mkdir -p "$LOGDIR"
STAMP=$(date +%Y%m%d-%H%M%S)-$$

# ------------------------------------------------------------------ main test
# Send an NVMe/TCP ICReq (digest bits DGST: 0..3) to 127.0.0.1:PORT and print
# "pfv cpda dgst maxh2cdata" from the ICResp; fails unless a well-formed
# 128-byte ICResp with the same digest bits comes back.
icreq_probe() {
    local port=$1 dgst=${2:-0} bytes
    bytes=$(
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        # CH: type 0 (ICReq), flags 0, hlen 128, pdo 0, plen 128 (LE);
        # PSH: pfv 0, hpda 0, dgst 0, maxr2t 0, 112 reserved bytes.
        { printf '\x00\x00\x80\x00\x80\x00\x00\x00'
          printf "\\x00\\x00\\x00\\x0$dgst\\x00\\x00\\x00\\x00"
          head -c 112 /dev/zero; } >&3
        timeout 10 head -c 128 <&3 | od -An -tu1 -v | tr -s ' \n' ' '
    ) || return 1
    # shellcheck disable=SC2206
    local b=($bytes)
    [ "${#b[@]}" -eq 128 ] || { echo "ICResp: got ${#b[@]} bytes" >&2; return 1; }
    [ "${b[0]}" -eq 1 ] || { echo "ICResp: PDU type ${b[0]}, expected 1" >&2; return 1; }
    [ "${b[2]}" -eq 128 ] || { echo "ICResp: hlen ${b[2]}, expected 128" >&2; return 1; }
    local plen=$((b[4] | b[5] << 8 | b[6] << 16 | b[7] << 24))
    [ "$plen" -eq 128 ] || { echo "ICResp: plen $plen, expected 128" >&2; return 1; }
    local pfv=$((b[8] | b[9] << 8)) maxh2c=$((b[12] | b[13] << 8 | b[14] << 16 | b[15] << 24))
    [ "$maxh2c" -ge 4096 ] && [ $((maxh2c % 4)) -eq 0 ] \
        || { echo "ICResp: bad MAXH2CDATA $maxh2c" >&2; return 1; }
    [ "${b[11]}" -eq "$dgst" ] || { echo "ICResp: digest bits ${b[11]}, asked for $dgst" >&2; return 1; }
    echo "pfv=$pfv cpda=${b[10]} dgst=${b[11]} maxh2cdata=$maxh2c"
}

NVME_PORT=$(ff_free_port)
REL_PORT=$(ff_free_port)
while [ "$REL_PORT" = "$NVME_PORT" ]; do REL_PORT=$(ff_free_port); done
LOG=$LOGDIR/selftest-$STAMP.log

echo "selftest: booting guest (nvmet via 127.0.0.1:$NVME_PORT, release port $REL_PORT, log $LOG)"
T_GUEST=$(now_ms)
"$HERE/run-guest.sh" \
    --script "$HERE/selftest-guest.sh" \
    --bin /usr/bin/sha256sum:/usr/local/bin/host-sha256sum \
    --env FF_SELFTEST_MIB=4 \
    --env FF_SELFTEST_RELEASE_PORT=5555 \
    --env 'FF_SELFTEST_QUOTED=a "quoted" $value; `x`' \
    --hostfwd "tcp:127.0.0.1:$NVME_PORT-:4420" \
    --hostfwd "tcp:127.0.0.1:$REL_PORT-:5555" \
    --timeout "$TIMEOUT" --log "$LOG" \
    -- "arg one" "it's two" >"$LOG.out" 2>&1 &
GPID=$!
# shellcheck disable=SC2064
trap "kill $GPID 2>/dev/null || true" EXIT
tail -n +1 -F "$LOG.out" 2>/dev/null &
TAILPID=$!

PROBE_OK=0
if ff_wait_for_log "$LOG" '^FERROFAB-GUEST-READY nvmet-up' "$TIMEOUT" "$GPID"; then
    if ICRESP=$(icreq_probe "$NVME_PORT" 0) && ICRESP_D=$(icreq_probe "$NVME_PORT" 3); then
        PROBE_OK=1
        echo "selftest: host -> guest nvmet via hostfwd: ICResp $ICRESP"
        echo "selftest: host -> guest nvmet via hostfwd, HDGST+DDGST: ICResp $ICRESP_D"
    else
        echo "selftest: ICReq/ICResp through 127.0.0.1:$NVME_PORT failed" >&2
    fi
    ff_release_guest "$REL_PORT" 30 || echo "selftest: could not release the guest" >&2
fi
set +e
wait "$GPID"
GRC=$?
set -e
trap - EXIT
sleep 0.3
kill "$TAILPID" 2>/dev/null || true
wait "$TAILPID" 2>/dev/null || true
T_GUEST_END=$(now_ms)

RESULT=$(grep '^run-guest.sh: result ' "$LOG.out" | tail -n1 || true)
if [ "$GRC" -eq 0 ] && grep -q 'selftest guest part PASSED' "$LOG"; then
    pass "guest: nvmet + nvme-tcp host, dd/cmp, digests, nvme-cli, e2fsprogs, --bin/--env/args"
else
    fail "guest part (run-guest.sh exit $GRC; log $LOG)"
fi
if [ "$PROBE_OK" = 1 ]; then
    pass "host -> guest nvmet through --hostfwd (ICReq/ICResp)"
else
    fail "host -> guest nvmet through --hostfwd"
fi

# ------------------------------------------------------------------ harness checks
if [ "$HARNESS_CHECKS" = 1 ]; then
    tmp=$(mktemp -d)
    printf '#!/bin/sh\necho "exiting with $FF_WANT"\nexit "$FF_WANT"\n' >"$tmp/exit.sh"
    set +e
    "$HERE/run-guest.sh" --quiet --script "$tmp/exit.sh" --env FF_WANT=42 \
        --log "$LOGDIR/selftest-exit-$STAMP.log" --timeout 120
    rc=$?
    set -e
    if [ "$rc" -eq 42 ]; then pass "guest exit code 42 passed through"; else fail "exit code: got $rc, want 42"; fi

    printf '#!/bin/sh\necho hanging\nsleep 1000\n' >"$tmp/hang.sh"
    set +e
    "$HERE/run-guest.sh" --quiet --script "$tmp/hang.sh" --timeout 25 \
        --log "$LOGDIR/selftest-hang-$STAMP.log"
    rc=$?
    set -e
    if [ "$rc" -eq 124 ]; then pass "hung guest killed by --timeout (124)"; else fail "timeout: got $rc, want 124"; fi
    if command -v pgrep >/dev/null && pgrep -f "selftest-hang-$STAMP" >/dev/null; then
        fail "qemu of the timed-out guest still running"
    fi
    rm -rf "$tmp"
fi

T_END=$(now_ms)
ms() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
echo "selftest: ${RESULT:-no run-guest result line}"
echo "selftest: main guest run $(ms $((T_GUEST_END - T_GUEST)))s (boot to /init ready: $(sed -n 's/.* boot=\([^ ]*\).*/\1/p' <<<"$RESULT")s); whole selftest $(ms $((T_END - T0)))s"
echo "kernel-selftest: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
