#!/usr/bin/env bash
# tests/kernel/ublk.sh - the ublk block-device exposure on Linux 6.12.
#
# Usage: ublk.sh [--bench] [NVMEOF_BINARY]
#
# Boots Debian's Linux 6.12 (ff_use_kernel_612; 6.1 has no ublk_drv) with
# the ublk_drv module and runs ublk/guest.sh: `ferrofab-nvmeof serve` on a
# namespace in the guest's tmpfs, `connect --expose-block`, mkfs.ext4 on
# /dev/ublkb0, mount, a file with a known pattern, disconnect, reconnect,
# verify, e2fsck; then the target killed under the device (a read must fail
# with EIO, not hang) and the device gone after every exit.
#
# --bench also runs, in the same boot, the comparison recorded in
# docs/benchmarks.md (tests/suites/bench_ublk.sh calls it this way): fio
# through /dev/ublkb0, through the FUSE file, and `ferrofab-nvmeof bench`
# on the same namespace. TCG distorts absolute figures; quote ratios.
# Knobs: FF_UBLK_BENCH_TIME (s per job, 6), FF_UBLK_BENCH_ROUNDS (2),
# FF_UBLK_BLOCK_ARGS (extra connect options for the ublk side).
#
# NVMEOF_BINARY defaults to target/debug/ferrofab-nvmeof (built if
# missing). Exit status 0 when everything passed; the last line reads
# "kernel-ublk: N passed, N failed".
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

BENCH=0
if [ "${1:-}" = --bench ]; then BENCH=1; shift; fi
case "${1:-}" in -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
NVMEOF=${1:-$TARGET_DIR/debug/ferrofab-nvmeof}
if [ ! -x "$NVMEOF" ]; then
    (cd "$REPO" && cargo build -q -p ferrofab-nvmeof --bin ferrofab-nvmeof)
fi

ff_use_kernel_612 || exit 1
FF_SETUP_QUIET=1 "$HERE/setup.sh"

WORK=$REPO/tests/.work/kernel-ublk
rm -rf "$WORK"; mkdir -p "$WORK"
# A stripped copy keeps the initramfs (guest RAM) small.
cp "$NVMEOF" "$WORK/ferrofab-nvmeof"
strip "$WORK/ferrofab-nvmeof" 2>/dev/null || true

args=(--script "$HERE/ublk/guest.sh" --bin "$WORK/ferrofab-nvmeof"
      --module ublk_drv --log "$WORK/console.log")
if [ "$BENCH" = 1 ]; then
    command -v fio >/dev/null || { apt-get install -y -qq fio >/dev/null 2>&1 || true; }
    command -v fio >/dev/null || { echo "ublk.sh: fio is needed for --bench" >&2; exit 1; }
    args+=(--bin "$(command -v fio)" --file "$HERE/ublk/bench.sh:/ferrofab/bench.sh"
           --module fuse --env BENCH=1 --env SIZE_MIB=512
           --env "BENCH_TIME=${FF_UBLK_BENCH_TIME:-6}" --env "BENCH_ROUNDS=${FF_UBLK_BENCH_ROUNDS:-2}" --env "BLOCK_ARGS=${FF_UBLK_BLOCK_ARGS:-}" --mem 2048 --timeout 1500)
else
    args+=(--timeout 400)
fi

rc=0
"$HERE/run-guest.sh" "${args[@]}" || rc=$?
passed=$(grep -c "ff: PASS:" "$WORK/console.log" || true)
if [ "$BENCH" = 1 ] && [ "$rc" = 0 ]; then
    # One row per job: each side's MiB/s per round (round 1 first), and the
    # per-round ratios against the initiator alone and ublk against FUSE.
    grep -o 'BENCH round=.*' "$WORK/console.log" | tr -d '\r' | awk '
        { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
          k = v["job"] SUBSEP v["round"]; jobs[v["job"]] = 1
          if (v["round"] + 0 > nr) nr = v["round"] + 0
          kib[k, v["side"]] = v["kib_s"]; iops[k, v["side"]] = v["iops"] }
        END {
          print "| job | bench MiB/s | ublk MiB/s | FUSE MiB/s | ublk / bench | FUSE / bench | ublk / FUSE |"
          print "|---|---:|---:|---:|---:|---:|---:|"
          n = split("write-1m-qd4 read-1m-qd4 randread-4k-qd32", order, " ")
          for (j = 1; j <= n; j++) {
            job = order[j]; if (!(job in jobs)) continue
            b = u = f = r1 = r2 = r3 = ""
            for (r = 1; r <= nr; r++) {
              k = job SUBSEP r
              b = b sprintf("%.1f ", kib[k, "bench"] / 1024); u = u sprintf("%.1f ", kib[k, "ublk"] / 1024)
              f = f sprintf("%.1f ", kib[k, "fuse"] / 1024)
              r1 = r1 sprintf("%.2f ", kib[k, "ublk"] / kib[k, "bench"])
              r2 = r2 sprintf("%.2f ", kib[k, "fuse"] / kib[k, "bench"])
              r3 = r3 sprintf("%.2f ", kib[k, "ublk"] / kib[k, "fuse"])
            }
            printf "| %s | %s| %s| %s| %s| %s| %s|\n", job, b, u, f, r1, r2, r3
          }
        }' >"$WORK/bench.md"
    cat "$WORK/bench.md"
fi
if [ "$rc" = 0 ]; then
    echo "kernel-ublk: $passed passed, 0 failed"
else
    grep "ff: FAIL" "$WORK/console.log" >&2 || true
    echo "ublk.sh: guest exit $rc; console: $WORK/console.log (kernel log: $WORK/console.log.kmsg)" >&2
    echo "kernel-ublk: $passed passed, 1 failed"
    exit 1
fi
