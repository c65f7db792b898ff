#!/usr/bin/env bash
# Idle CPU section of the `bench` suite (called from bench.sh; also
# runnable alone: tests/suites/bench_idle.sh). Needs root and /dev/fuse.
#
# What a quiet cluster costs when nothing happens, goal < 1% of a core per
# process (issue #12 item 17: `ferrofab dev` once spun three threads at
# 100% while idle):
#
# 1. `ferrofab dev --dir DIR` with its demo layout (one volume attached to
#    the workstation), from "ferrofab dev: ready" plus a settle period;
# 2. the same cluster as standalone daemons from DIR's configs after dev
#    stopped: ferrofab-controller, a storage ferrofab-agent (two exports)
#    and a workstation ferrofab-agent with two attachments (the layout's
#    demo-1 and demo-2 attached through its local API), measured at once.
#
# CPU is utime+stime of the whole process (every thread) from
# /proc/PID/stat over the window. Output: tests/.work/bench/idle.md (the
# table, appended to summary.md by bench.sh) and idle-*.log.
# Knobs: FF_IDLE_TIME (default 30 s per measurement), FF_IDLE_SETTLE
# (default 10 s after start-up before measuring).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ff_need_pkgs fuse3 mount
ff_need_cmd umount mountpoint getconf
[ "$(id -u)" -eq 0 ] || ff_die "the idle benchmark mounts FUSE: run it as root"
[ -e /dev/fuse ] || ff_die "the idle benchmark needs /dev/fuse"

window=${FF_IDLE_TIME:-30}
settle=${FF_IDLE_SETTLE:-10}
out=$FF_WORK/bench
dir=$out/idle-dev
mkdir -p "$out"
FF=$(ff_release_bin ferrofab)
CTL=$(ff_release_bin ferrofab-controller)
AGENT=$(ff_release_bin ferrofab-agent)
hz=$(getconf CLK_TCK)

pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    # The workstation's data-path holder outlives its agent by design.
    local st
    for st in "$dir"/nodes/*/state; do
        [ -S "$st/holder.sock" ] && "$AGENT" holder stop --state-dir "$st" --timeout 20s >/dev/null 2>&1
    done
    mountpoint -q "$dir/volumes" 2>/dev/null && umount -l "$dir/volumes" || true
}
trap cleanup EXIT

# cpu_ticks PID : utime+stime of every thread of PID so far, in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# thread_ticks PID : "TID NAME TICKS" per thread of PID, sorted for join.
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s %s %s\n' "${t##*/}" "$(tr ' ' _ <"$t/comm")" "$(awk '{ print $14 + $15 }' "$t/stat" 2>/dev/null || echo 0)"
    done | sort
}

# measure NAME PID... : CPU of each PID over one window, in parallel; one
# table row each into $rows.
rows=()
measure() {
    local name=$1 pid i
    shift
    local -a pids_m=("$@") before=() tb=()
    for i in "${!pids_m[@]}"; do
        pid=${pids_m[$i]}
        before[i]=$(cpu_ticks "$pid")
        tb[i]=$(thread_ticks "$pid")
    done
    ff_say "idle: measuring $name for ${window}s"
    sleep "$window"
    for i in "${!pids_m[@]}"; do
        pid=${pids_m[$i]}
        [ -d "/proc/$pid" ] || ff_die "$name: process $pid died during the measurement"
        local after threads busiest
        after=$(cpu_ticks "$pid")
        threads=$(ls "/proc/$pid/task" | wc -l)
        busiest=$(join <(echo "${tb[i]}") <(thread_ticks "$pid") 2>/dev/null |
            awk -v hz="$hz" '{ d = $5 - $3; if (d > m) { m = d; n = $2 } } END { if (m > 0) printf "%s %.2f s", n, m / hz; else print "-" }')
        rows+=("$(awk -v hz="$hz" -v w="$window" -v b="${before[i]}" -v a="$after" \
            -v label="${labels[i]}" -v th="$threads" -v bz="$busiest" 'BEGIN {
                s = (a - b) / hz; pct = 100 * s / w
                printf "| %s | %.2f | %.2f%% | %d | %s | %s |", label, s, pct, th, bz, (pct < 1 ? "ok" : "OVER")
            }')")
    done
}

# --- 1. ferrofab dev ---------------------------------------------------------
rm -rf "$dir"
ff_say "idle: ferrofab dev --dir $dir"
"$FF" dev --dir "$dir" >"$out/idle-dev.log" 2>&1 &
dev_pid=$!
pids+=("$dev_pid")
ff_wait_line "$out/idle-dev.log" "ferrofab dev: ready" 180
sleep "$settle"
labels=("ferrofab dev (controller + storage + workstation agents, 1 attachment)")
measure "ferrofab dev" "$dev_pid"
kill -TERM "$dev_pid"
for _ in $(seq 1 60); do [ -d "/proc/$dev_pid" ] || break; sleep 1; done
[ -d "/proc/$dev_pid" ] && ff_die "ferrofab dev did not stop within 60 s"
wait "$dev_pid" 2>/dev/null || true
pids=()

# --- 2. the same cluster as standalone daemons ------------------------------
ff_say "idle: standalone controller and agents from $dir"
"$CTL" --config "$dir/controller.toml" >"$out/idle-controller.log" 2>&1 &
ctl_pid=$!
pids+=("$ctl_pid")
ff_wait_line "$out/idle-controller.log" "ferrofab-controller ready" 60
"$AGENT" --config "$dir/nodes/storage-1/agent.toml" run >"$out/idle-storage.log" 2>&1 &
st_pid=$!
pids+=("$st_pid")
"$AGENT" --config "$dir/nodes/ws-1/agent.toml" run >"$out/idle-workstation.log" 2>&1 &
ws_pid=$!
pids+=("$ws_pid")
# The layout's demo-1 is attached already; demo-2 through the local API.
ws_api=("$AGENT" --config "$dir/nodes/ws-1/agent.toml")
for _ in $(seq 1 60); do "${ws_api[@]}" status >/dev/null 2>&1 && break; sleep 1; done
"${ws_api[@]}" attach demo-2 --timeout 120s >/dev/null || ff_die "attach demo-2 failed (see $out/idle-workstation.log)"
for _ in $(seq 1 120); do [ -e "$dir/volumes/demo-1" ] && break; sleep 1; done
[ -e "$dir/volumes/demo-1" ] || ff_die "demo-1 never appeared in $dir/volumes"
n=$("${ws_api[@]}" attachments --json | grep -c '"attachment"' || true)
[ "$n" -ge 2 ] || ff_die "the workstation has $n attachments, expected 2"
sleep "$settle"
labels=("ferrofab-controller (2 nodes, 2 volumes, 2 attachments)"
    "ferrofab-agent, storage (2 exports, 1 host connected to each)"
    "ferrofab-agent, workstation (2 attachments exposed through FUSE)")
measure "the standalone daemons" "$ctl_pid" "$st_pid" "$ws_pid"
for p in "$ws_pid" "$st_pid" "$ctl_pid"; do
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
done
pids=()

{
    echo "## Idle CPU"
    echo
    echo "\`tests/suites/bench_idle.sh\` (part of \`./tests/run bench\`): CPU time (utime+stime,"
    echo "all threads) of each process over ${window} s after start-up plus ${settle} s,"
    echo "with nothing happening; $(nproc) cores. Goal: < 1% of a core each."
    echo
    echo "| process | CPU-s in ${window} s | share of one core | threads | busiest thread | goal |"
    echo "|---|---:|---:|---:|---|---|"
    printf '%s\n' "${rows[@]}"
} >"$out/idle.md"
cat "$out/idle.md"
