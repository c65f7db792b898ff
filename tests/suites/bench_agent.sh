#!/usr/bin/env bash
# Agent section of the `bench` suite (called at the end of bench.sh; also
# runnable alone: tests/suites/bench_agent.sh). Needs root and /dev/fuse.
#
# * control plane at scale: `cargo bench -p ferrofab-controller --bench
#   scale` — 1,000 volumes over 50 simulated workstations and 5 simulated
#   storage nodes (in-process tasks speaking the agent gRPC protocol, no
#   data path), one Apply until every attachment is Attached, against the
#   same Apply with nobody watching;
# * real data path: `cargo bench -p ferrofab-agent --bench agent` — single
#   attach end to end (API call → exposed file) over 100 attach/detach
#   cycles against a raw connect of the built-in initiator (authenticated
#   with DH-HMAC-CHAP like the attachment), then 256
#   volumes on one storage agent across 8 workstation agents (converge
#   time, RSS).
#
# Output: tests/.work/bench/agent.txt (raw `bench:` lines) and
# tests/.work/bench/agent.md (appended to summary.md by bench.sh).
# Knobs: FF_BENCH_QUICK=1 (100 volumes at scale, 10 cycles, 32 real
# volumes: a smoke run, not figures), or FERROFAB_BENCH_SCALE_VOLUMES,
# FERROFAB_BENCH_ATTACH_CYCLES, FERROFAB_BENCH_REAL_VOLUMES;
# FERROFAB_BENCH_TRACE=DIR keeps debug logs of every process of the attach
# cycles and a per-cycle timing file (tests/suites/attach_trace.py DIR
# prints the slowest cycles and a cycle's timeline).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ff_need_pkgs python3 fuse3 mount
ff_need_cmd python3 umount
[ "$(id -u)" -eq 0 ] || ff_die "the agent benchmarks mount FUSE: run them as root"
[ -e /dev/fuse ] || ff_die "the agent benchmarks need /dev/fuse"

out=$FF_WORK/bench
mkdir -p "$out"
if [ "${FF_BENCH_QUICK:-0}" = 1 ]; then
    export FERROFAB_BENCH_SCALE_VOLUMES=${FERROFAB_BENCH_SCALE_VOLUMES:-100}
    export FERROFAB_BENCH_ATTACH_CYCLES=${FERROFAB_BENCH_ATTACH_CYCLES:-10}
    export FERROFAB_BENCH_REAL_VOLUMES=${FERROFAB_BENCH_REAL_VOLUMES:-32}
fi
knobs=""
for k in FERROFAB_BENCH_SCALE_VOLUMES FERROFAB_BENCH_ATTACH_CYCLES FERROFAB_BENCH_REAL_VOLUMES; do
    [ -n "${!k:-}" ] && knobs="$knobs$k=${!k} "
done
: >"$out/agent.txt"
ff_need_pkgs protobuf-compiler   # the etcd client crate compiles protos
for b in "ferrofab-controller --bench scale" "ferrofab-agent --bench agent"; do
    ff_say "agent: ${knobs}cargo bench -p $b"
    # shellcheck disable=SC2086 # $b is two words on purpose
    (cd "$FF_REPO" && cargo bench -q -p $b) | tee -a "$out/agent.txt" | grep '^bench:' >&2 \
        || ff_die "benchmark $b failed"
done
grep -q '^bench: scale_converged ' "$out/agent.txt" || ff_die "scale benchmark printed no result"
grep -q '^bench: attach_p99 ' "$out/agent.txt" || ff_die "agent benchmark printed no attach result"
# FERROFAB_BENCH_REAL_VOLUMES=0 leaves the real-volume part out on purpose.
if [ "${FERROFAB_BENCH_REAL_VOLUMES:-}" != 0 ]; then
    grep -q '^bench: real_converged_exposed ' "$out/agent.txt" || ff_die "agent benchmark printed no real-volume result"
fi

python3 - "$out/agent.txt" "$knobs" "$(nproc)" <<'PY' >"$out/agent.md"
import sys
lines = open(sys.argv[1]).read().splitlines()
knobs, cores = sys.argv[2], sys.argv[3]
r = {}
for l in lines:
    if l.startswith("bench: "):
        _, name, value, unit = l.split()
        r[name] = (float(value), unit)
def v(name):
    return r[name][0]
print("## Agents and convergence\n")
print(f"`{knobs}cargo bench -p ferrofab-controller --bench scale` and "
      f"`{knobs}cargo bench -p ferrofab-agent --bench agent` ({cores} cores)\n")
print("| measure | value | vs baseline | goal |")
print("|---|---:|---|---|")
def row(label, name, ratio="", goal=""):
    if name in r:
        val, unit = r[name]
        print(f"| {label} | {val:,.2f} {unit} | {ratio} | {goal} |")
row("baseline: raw authenticated connect + disconnect of the built-in initiator, p50", "raw_connect_p50")
row("baseline: raw authenticated connect + disconnect, p99", "raw_connect_p99")
raw = v("raw_connect_p50") if "raw_connect_p50" in r else 0
rat = lambda n: f"{v(n) / raw:.1f}x raw connect p50" if raw and n in r else ""
row("single attach, API call → exposed file, p50", "attach_p50", rat("attach_p50"))
raw99 = v("raw_connect_p99") if "raw_connect_p99" in r else 0
rat99 = lambda n: (f"{rat(n)}; {v(n) / raw99:.1f}x raw connect p99" if raw99 and n in r else rat(n))
row("single attach, API call → exposed file, p99", "attach_p99", rat99("attach_p99"),
    "< 300 ms; ≤ 10x raw connect (issue 20)")
row("single detach, API call → file and attachment gone, p50", "detach_p50", rat("detach_p50"))
row("single detach, p99", "detach_p99", rat99("detach_p99"), "≤ 10x raw connect (issue 20)")
base = v("scale_apply_no_agents") if "scale_apply_no_agents" in r else 0
srat = lambda n: f"{v(n) / base:.1f}x apply alone" if base and n in r else ""
row("baseline: scale Apply with no agents watching", "scale_apply_no_agents")
row("scale: the same Apply with 55 simulated agents watching", "scale_apply_with_agents", srat("scale_apply_with_agents"))
row("scale: every volume Ready", "scale_volumes_ready", srat("scale_volumes_ready"))
row("scale: every attachment Attached (converged)", "scale_converged", srat("scale_converged"), "< 5 s")
row("scale: controller RSS after converging", "scale_controller_rss")
row("scale: status reports sent by the simulated agents", "scale_agent_reports")
row("real layout: Apply call", "real_apply")
row("real layout: every volume exposed on its workstation", "real_converged_exposed", "", "< 30 s")
row("real layout: every attachment Attached in the API", "real_converged_api")
per = "real_per_volume"
if per in r and "attach_p50" in r:
    row("real layout: converge time per volume", per, f"{v(per) / v('attach_p50'):.2f}x single attach p50")
row("real layout: storage agent RSS", "real_storage_agent_rss")
row("real layout: workstation agent RSS, mean", "real_workstation_agent_rss_mean")
row("real layout: workstation agent RSS, max", "real_workstation_agent_rss_max")
row("real layout: controller RSS", "real_controller_rss")
PY
cat "$out/agent.md"
