#!/usr/bin/env bash
# FUSE section of the `bench` suite (called from bench.sh; also runnable
# alone: tests/suites/bench_fuse.sh). Needs root and /dev/fuse.
#
# Issue 20, items 3 and 4, against one `ferrofab-nvmeof serve` whose
# namespace is a page-cache file on /dev/shm (see bench_fuse.py):
#
# 1. fio on the file `ferrofab-nvmeof connect` exposes, against
#    `ferrofab-nvmeof bench` on the same namespace, back to back: 1 MiB
#    sequential write and read (psync, libaio QD4), 4 KiB randread libaio
#    QD32; the ratio FUSE / initiator per round;
# 2. the microscope workload: FF_MICRO_SIZE (default 8 GiB, lowered with a
#    note when the free memory cannot hold it) in 1 MiB blocks, fsync,
#    read back, through the exposed file and through the initiator alone
#    (nvmeof-expose/benches/microscope.rs): GB/s, 2 TB/h microscopes
#    served, CPU s/GB of the client side and of the target.
#
# Output: tests/.work/bench/fuse.md (appended to summary.md by bench.sh)
# and fuse-*.json. Knobs: FF_FUSE_ROUNDS (default 2), FF_FUSE_TIME (default
# 5s per fio/bench job), FF_MICRO_SIZE, FF_MICRO_QD (default 1), FF_FUSE_POLL
# (default "interrupt": the poll mode of both the `connect` holder and
# `bench`; the agent's default is "adaptive"), FF_FUSE_JOBS (comma-separated
# job names, default all), FF_FUSE_PIN
# (default "0:1": clients on CPU 0, the target on CPU 1; "none").
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib/common.sh"

ff_need_pkgs python3 fio fuse3 util-linux
ff_need_cmd python3 fio fusermount3 taskset
[ "$(id -u)" -eq 0 ] || ff_die "the FUSE benchmark mounts FUSE: run it as root"
[ -e /dev/fuse ] || ff_die "the FUSE benchmark needs /dev/fuse"

out=$FF_WORK/bench
mkdir -p "$out"
rm -f "$out"/fuse-*.json
bin=$(ff_release_bin ferrofab-nvmeof)
ff_cargo bench -p ferrofab-nvmeof-expose --bench microscope --no-run >"$out/fuse-build.log" 2>&1 ||
    ff_die "building the microscope benchmark failed (see $out/fuse-build.log)"
micro=$(sed -n 's/.*Executable benches\/microscope.rs (\(.*\))$/\1/p' "$out/fuse-build.log" | tail -1)
[ -n "$micro" ] || ff_die "no microscope executable in $out/fuse-build.log"
case $micro in /*) ;; *) micro=$FF_REPO/$micro ;; esac
[ -x "$micro" ] || ff_die "microscope benchmark $micro is not executable"

ff_say "FUSE exposure: fio vs the initiator, and the microscope workload"
python3 "$here/bench_fuse.py" "$bin" "$micro" "$out" "${FF_FUSE_ROUNDS:-2}"
