#!/usr/bin/env bash
# ublk section of the `bench` suite (issue 20 item 3's design; also
# runnable alone: tests/suites/bench_ublk.sh). Boots Linux 6.12 under qemu
# (TCG) and, in one boot, drives one namespace of our target three ways,
# job by job and round by round: `ferrofab-nvmeof bench`, fio on
# /dev/ublkb0 (`connect --expose-block`) and fio on the FUSE file (see
# tests/kernel/ublk/bench.sh). TCG distorts absolute figures (the guest's
# two vCPUs are emulated and also run the target): only the ratios mean
# anything. Output: tests/.work/kernel-ublk/bench.md (appended to
# summary.md by bench.sh when present).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ff_need_pkgs fio binutils
nvmeof=$(ff_release_bin ferrofab-nvmeof)
ff_say "bench: ublk vs FUSE vs the initiator under Linux 6.12 (TCG)"
"$FF_REPO/tests/kernel/ublk.sh" --bench "$nvmeof"
out=$FF_REPO/tests/.work/bench
if [ -f "$out/summary.md" ]; then
    { echo; echo "### ublk vs FUSE vs the initiator (Linux 6.12 under TCG; ratios only)"; echo
      cat "$FF_REPO/tests/.work/kernel-ublk/bench.md"; } >>"$out/summary.md"
fi
