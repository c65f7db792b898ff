#!/usr/bin/env bash
# SPDK section of the `bench` suite (called by bench.sh; also runnable
# alone: tests/suites/bench_spdk.sh). Needs root (hugepages).
#
# SPDK v23.01.1 is the yardstick (issue 20): in one run, pinned like the
# issue's figures (every target on core 1, every client on core 0), for
# 4K randread QD1 and QD32, 4K randwrite QD32, 128K read and write QD8:
#
#   * SPDK's perf against SPDK's nvmf_tgt (RAM bdev): the reference;
#   * SPDK's perf against our target (`ferrofab-nvmeof serve`, by default
#     a memory namespace like the RAM bdev, the target's default poll
#     mode), with nvmf_tgt stopped (SIGSTOP) meanwhile, as it is for the
#     loopback ceiling: its reactor would otherwise spin on the same core;
#     our target's CPU time per I/O (/proc/PID/stat) is recorded too;
#   * our initiator (`ferrofab-nvmeof bench`, busy-polling like perf; QD1
#     also sleeping) against SPDK's nvmf_tgt;
#   * the loopback ceiling (`bench --baseline`, pipelined and batched,
#     client core 0, server core 1) in the same run, before and after the
#     jobs (the best of the two counts: the VM's speed drifts).
#
# and prints the issue's two tables as same-run ratios (tests/.work/bench/
# spdk.md, appended to summary.md by bench.sh).
#
# The SPDK tools live outside the repository (the prebuilt tarball named by
# FF_SPDK_TARBALL, default ../shared/tools/spdk-v23.01.1-debian12-amd64.tar.gz
# next to the repository; see that directory's notes/spdk-anchor.md). When
# it is absent this section is SKIPPED, loudly: a highlighted line on
# stderr and a "SKIPPED" paragraph in spdk.md and summary.md saying which
# comparisons did not run. `bench` is not part of the default run and its
# other sections stand on their own, so the missing yardstick does not fail
# it; FF_BENCH_SPDK=require makes it fail instead, FF_BENCH_SPDK=off skips
# on purpose (also said loudly).
#
# Knobs: FF_BENCH_SECONDS (default 10, per perf/bench run, as in the
# issue), FF_BENCH_SPDK_RUNS (default 2), FF_BENCH_BASELINE_SECONDS
# (default 2, per loopback test), FF_SPDK_SHM_ID (default 41: nvmf_tgt
# uses it, perf uses it + 100, so several SPDK users can share a machine),
# FF_SPDK_MEM_MB (default 512, hugepage memory per SPDK process),
# FF_SPDK_NS_MB (default 256, RAM bdev and our namespace size),
# FF_SPDK_OURS_POLL (default adaptive:50, our target's default; `busy`
# spins like SPDK's reactor), FF_SPDK_OURS_BACKEND (where our namespace
# lives: `memory`, the default, a memory namespace (`memory = "SIZE"`, in
# huge pages like the RAM bdev: the fair comparison); `shm`, a page-cache
# file on /dev/shm; `huge`, that file on a huge=always tmpfs;
# FF_SPDK_OURS_HUGE=1 is the old spelling of `huge`).
# nvmf_tgt runs without its core lock files (--disable-cpumask-locks), so
# another SPDK user pinned to core 1 does not stop it (the figures of such
# a run are shared-core figures, like every other on a busy machine).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib/common.sh"

out=$FF_WORK/bench
work=$out/spdk
md=$out/spdk.md
mkdir -p "$out"
# A run that was killed may have left its huge-page tmpfs mounted.
if mountpoint -q "$work/huge-tmpfs" 2>/dev/null; then umount "$work/huge-tmpfs"; fi
rm -rf "$work"
mkdir -p "$work"

tarball=${FF_SPDK_TARBALL:-$(cd "$FF_REPO/.." && pwd)/shared/tools/spdk-v23.01.1-debian12-amd64.tar.gz}
want=${FF_BENCH_SPDK:-auto}
secs=${FF_BENCH_SECONDS:-10}
runs=${FF_BENCH_SPDK_RUNS:-2}
base_secs=${FF_BENCH_BASELINE_SECONDS:-2}
shm=${FF_SPDK_SHM_ID:-41}
mem=${FF_SPDK_MEM_MB:-512}
ns_mb=${FF_SPDK_NS_MB:-256}
ours_poll=${FF_SPDK_OURS_POLL:-adaptive:50}
ours_backend=${FF_SPDK_OURS_BACKEND:-memory}
[ "${FF_SPDK_OURS_HUGE:-0}" = 1 ] && ours_backend=huge
case $ours_backend in
    memory) ours_desc="a memory namespace (memory = \"${ns_mb}MiB\")" ;;
    shm) ours_desc="a page-cache file on /dev/shm" ;;
    huge) ours_desc="a page-cache file on a huge=always tmpfs" ;;
    *) ff_die "FF_SPDK_OURS_BACKEND must be memory, shm or huge (got '$ours_backend')" ;;
esac

skip() { # REASON : say loudly what did not run, record it, stop this section
    printf '\033[1;33m==> SKIPPED: SPDK comparison: %s\033[0m\n' "$1" >&2
    {
        echo "## Against SPDK v23.01.1"
        echo
        echo "**SKIPPED: $1.** SPDK's perf against our target, our initiator against"
        echo "SPDK's nvmf_tgt and perf against nvmf_tgt were not run; the ratios in this"
        echo "summary are against the loopback ceiling only."
    } >"$md"
    exit 0
}

case $want in
    off) skip "FF_BENCH_SPDK=off" ;;
    auto | require) ;;
    *) ff_die "FF_BENCH_SPDK must be auto, require or off (got '$want')" ;;
esac
if [ ! -r "$tarball" ]; then
    [ "$want" = require ] && ff_die "FF_BENCH_SPDK=require but the SPDK tarball $tarball is missing"
    skip "the SPDK tools tarball $tarball is absent (set FF_SPDK_TARBALL)"
fi
[ "$(id -u)" -eq 0 ] || ff_die "the SPDK comparison reserves hugepages: run it as root"
[ "$(nproc)" -ge 2 ] || ff_die "the SPDK comparison pins targets to core 1 and clients to core 0: it needs 2 CPUs"
ff_need_pkgs libdpdk-dev libnuma1 libfdt1 libbsd0 python3 util-linux
ff_need_cmd python3 taskset mountpoint

# Extract once per tarball (a stamp names its checksum).
cache=$FF_WORK/cache/spdk
sum=$(sha256sum "$tarball" | cut -c1-16)
if [ ! -e "$cache/.extracted-$sum" ]; then
    ff_say "spdk: extracting $tarball into $cache"
    rm -rf "$cache"
    mkdir -p "$cache"
    tar xzf "$tarball" -C "$cache" || ff_die "extracting $tarball failed"
    touch "$cache/.extracted-$sum"
fi
S=$cache/spdk-v23.01.1
[ -x "$S/build/bin/nvmf_tgt" ] && [ -x "$S/build/examples/perf" ] \
    || ff_die "the SPDK tarball has no build/bin/nvmf_tgt or build/examples/perf under spdk-v23.01.1/"
export LD_LIBRARY_PATH=$S/build/lib

# Hugepages: two SPDK processes at $mem MB each, in 2 MiB pages (and our
# memory namespace, which takes them when there are enough, else
# transparent huge pages); never lower a larger reservation somebody else
# made.
pages=$(((2 * mem + 64) / 2))
[ "$ours_backend" = memory ] && pages=$((pages + ns_mb / 2))
if [ "$(cat /proc/sys/vm/nr_hugepages)" -lt "$pages" ]; then
    echo "$pages" >/proc/sys/vm/nr_hugepages
    [ "$(cat /proc/sys/vm/nr_hugepages)" -ge "$pages" ] || ff_die "could not reserve $pages hugepages"
fi
if ! mountpoint -q /dev/hugepages; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs nodev /dev/hugepages || ff_die "could not mount hugetlbfs on /dev/hugepages"
fi

bin=$(ff_release_bin ferrofab-nvmeof)
hostnqn=nqn.2014-08.org.nvmexpress:uuid:5f2e7c1a-3b4d-4e6f-8a9b-0c1d2e3f4a5b
spdk_nqn=nqn.2016-06.io.spdk:bench
ours_nqn=nqn.2026-11.io.ferrofab:spdk-bench
spdk_port=$(ff_free_port)
ours_port=$(ff_free_port)
sock=$work/nvmf_tgt.sock
nsfile=/dev/shm/ferrofab-spdk-bench.img
# FF_SPDK_OURS_BACKEND=huge: our namespace file on a tmpfs of 2 MiB pages
# (huge=always), as SPDK's RAM bdev lives in huge pages; the page cache's
# per-page work is then paid once per 2 MiB.
hugedir=$work/huge-tmpfs
if [ "$ours_backend" = huge ]; then
    mkdir -p "$hugedir"
    mount -t tmpfs -o "huge=always,size=$((ns_mb + 64))m" tmpfs "$hugedir" \
        || ff_die "could not mount a huge=always tmpfs on $hugedir (FF_SPDK_OURS_HUGE=1)"
    nsfile=$hugedir/ferrofab-spdk-bench.img
fi
tgt_pid=""
serve_pid=""
cleanup() {
    [ -n "$tgt_pid" ] && kill -CONT "$tgt_pid" 2>/dev/null
    [ -n "$tgt_pid" ] && kill "$tgt_pid" 2>/dev/null && wait "$tgt_pid" 2>/dev/null
    [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    rm -f "$nsfile"
    if mountpoint -q "$hugedir"; then umount "$hugedir"; fi
    true
}
trap cleanup EXIT

ff_say "spdk: nvmf_tgt on core 1, RAM bdev of $ns_mb MiB, port $spdk_port"
taskset -c 1 "$S/build/bin/nvmf_tgt" -m 0x2 -i "$shm" -s "$mem" -r "$sock" --disable-cpumask-locks >"$work/nvmf_tgt.log" 2>&1 &
tgt_pid=$!
rpc() { python3 "$S/scripts/rpc.py" -s "$sock" "$@" >>"$work/rpc.log" 2>&1 || ff_die "rpc.py $* failed (see $work/rpc.log)"; }
for ((i = 0; i < 300; i++)); do
    [ -S "$sock" ] && break
    kill -0 "$tgt_pid" 2>/dev/null || ff_die "nvmf_tgt exited (see $work/nvmf_tgt.log)"
    sleep 0.1
done
rpc nvmf_create_transport -t TCP -u 16384 -i 131072 -c 8192
rpc bdev_malloc_create -b Malloc0 "$ns_mb" 4096
rpc nvmf_create_subsystem "$spdk_nqn" -a -s SPDK0001
rpc nvmf_subsystem_add_ns "$spdk_nqn" Malloc0
rpc nvmf_subsystem_add_listener "$spdk_nqn" -t tcp -a 127.0.0.1 -s "$spdk_port"

ff_say "spdk: our target on core 1, $ours_desc of $ns_mb MiB, port $ours_port"
if [ "$ours_backend" = memory ]; then
    # 4 KiB blocks, like the RAM bdev.
    ns_storage="memory = \"${ns_mb}MiB\"
block_size = 4096"
else
    # Written once so reads hit pages, not holes (as the RAM bdev holds data).
    dd if=/dev/zero of="$nsfile" bs=1M count="$ns_mb" status=none
    ns_storage="path = \"$nsfile\"
size = \"${ns_mb}MiB\""
fi
cat >"$work/serve.toml" <<CFG
[target]
poll_mode = "$ours_poll"

[[listener]]
address = "127.0.0.1:$ours_port"

[[subsystem]]
nqn = "$ours_nqn"
allowed_hosts = ["$hostnqn"]

[[subsystem.namespace]]
nsid = 1
$ns_storage
CFG
taskset -c 1 "$bin" serve -c "$work/serve.toml" --no-watch >"$work/serve.log" 2>&1 &
serve_pid=$!
ff_wait_line "$work/serve.log" "ready, serving" 30
if [ "$ours_backend" = memory ]; then
    # Which pages the mapping got: Hugetlb (the reserved pool) or
    # Transparent (ordinary memory advised to use huge pages).
    pages_kind=$(grep -o 'pages=[A-Za-z]*' "$work/serve.log" | head -1 | cut -d= -f2)
    ours_desc="a memory namespace (memory = \"${ns_mb}MiB\", ${pages_kind:-unknown} pages)"
fi

# name  perf-args  our bench args
workloads=(
    "randread-qd1|-q 1 -o 4096 -w randread|--pattern randread --bs 4k --qd 1"
    "randread-qd32|-q 32 -o 4096 -w randread|--pattern randread --bs 4k --qd 32"
    "randwrite-qd32|-q 32 -o 4096 -w randwrite|--pattern randwrite --bs 4k --qd 32"
    "read-128k-qd8|-q 8 -o 131072 -w read|--pattern read --bs 128k --qd 8"
    "write-128k-qd8|-q 8 -o 131072 -w write|--pattern write --bs 128k --qd 8"
)
perf() { # OUTFILE PORT SUBNQN PERF-ARGS...
    local f=$1 port=$2 nqn=$3
    shift 3
    local cmd=(taskset -c 0 "$S/build/examples/perf" -i $((shm + 100)) -s "$mem" -c 0x1 "$@" -t "$secs" -L
        -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$nqn hostnqn:$hostnqn")
    echo "${cmd[*]}" >>"$work/commands.txt"
    "${cmd[@]}" >"$f" 2>&1 || ff_die "SPDK perf failed (see $f)"
    grep -q '^Total ' "$f" || ff_die "SPDK perf printed no Total line (see $f)"
}
# nvmf_tgt's reactor spins on core 1 even with no connection, so while
# anything else is measured on core 1 (perf against our target, the
# loopback ceiling) it is stopped: a spinning neighbour on the target's core
# halved our target's figures (2026-12-05: 128K read 0.21x of SPDK's with it
# running, see docs/benchmarks.md). It holds no connection at those times.
# After it resumes it gets a moment before the next client connects: a
# client that connected at once was once dropped for a keep-alive timeout
# (its pollers catching up on the seconds it was stopped).
spdk_pause() { kill -STOP "$tgt_pid"; }
# Our target's user + system time so far, in clock ticks (CPU per I/O).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$serve_pid/stat"; }
spdk_resume() {
    kill -CONT "$tgt_pid"
    sleep 2
}
ours() { # OUTFILE OUR-BENCH-ARGS...
    local f=$1
    shift
    local cmd=(taskset -c 0 "$bin" bench -a 127.0.0.1 -s "$spdk_port" -n "$spdk_nqn" --queues 1 "$@" --time "${secs}s" --json)
    echo "${cmd[*]}" >>"$work/commands.txt"
    "${cmd[@]}" >"$f" 2>"$f.err" || ff_die "our initiator failed against nvmf_tgt (see $f.err)"
}

for ((run = 1; run <= runs; run++)); do
    echo "# run $run" >>"$work/commands.txt"
    ff_say "spdk run $run: loopback ceiling (${base_secs}s per test)"
    echo "taskset -c 0,1 $bin bench --baseline --time ${base_secs}s --json" >>"$work/commands.txt"
    spdk_pause
    taskset -c 0,1 "$bin" bench --baseline --time "${base_secs}s" --json >"$work/r$run-baseline.json"
    spdk_resume
    for w in "${workloads[@]}"; do
        IFS='|' read -r name pargs oargs <<<"$w"
        ff_say "spdk run $run: $name (${secs}s each: perf→nvmf_tgt, perf→ours, ours→nvmf_tgt)"
        # shellcheck disable=SC2086 # the argument strings split on purpose
        perf "$work/r$run-perf-spdk-$name.txt" "$spdk_port" "$spdk_nqn" $pargs
        spdk_pause
        cpu_ticks >"$work/r$run-cpu-ours-$name.txt"
        # shellcheck disable=SC2086
        perf "$work/r$run-perf-ours-$name.txt" "$ours_port" "$ours_nqn" $pargs
        cpu_ticks >>"$work/r$run-cpu-ours-$name.txt"
        spdk_resume
        # shellcheck disable=SC2086
        ours "$work/r$run-ours-spdk-$name.json" $oargs --poll-mode busy
        if [ "$name" = randread-qd1 ]; then
            # shellcheck disable=SC2086
            ours "$work/r$run-ours-spdk-$name-interrupt.json" $oargs --poll-mode interrupt
        fi
        # The initiator's default: spins a learned budget, then sleeps.
        # shellcheck disable=SC2086
        ours "$work/r$run-ours-spdk-$name-adaptive.json" $oargs --poll-mode adaptive
    done
    # Once more at the end of the run: the VM's speed drifts within minutes,
    # and the ceiling is the best the raw exchange reached around the jobs.
    ff_say "spdk run $run: loopback ceiling again"
    echo "taskset -c 0,1 $bin bench --baseline --time ${base_secs}s --json   # again, after the jobs" >>"$work/commands.txt"
    spdk_pause
    taskset -c 0,1 "$bin" bench --baseline --time "${base_secs}s" --json >"$work/r$run-baseline-after.json"
    spdk_resume
done

python3 "$here/bench_spdk.py" "$work" "$runs" "$secs" "$(cat /proc/loadavg)" "$ours_desc" "$(getconf CLK_TCK)" >"$md" \
    || ff_die "the SPDK summary failed (see $work)"
{
    echo
    echo "Commands (run 1; ports change per run):"
    echo
    sed -n '/^# run 1$/,/^# run 2$/p' "$work/commands.txt" | grep -v '^# run' | sed 's/^/    /'
} >>"$md"
cat "$md"
