#!/usr/bin/env bash
# Suite `bench`: measurements, not pass/fail tests (it fails only if a
# benchmark cannot run or verify finds corruption).
#
# The development VMs swing 2-3x between runs, so every number is taken in
# rounds that interleave the loopback baseline with the workloads, and the
# summary quotes medians next to the baseline of the same run.
#
# Output: tests/.work/bench/*.json (one file per run and round) and
# tests/.work/bench/summary.md (for docs/benchmarks.md).
#
# Each round ends with the initiator section (bench_initiator.py): the
# built-in initiator against the built-in target with both busy-polling and
# both sleeping, the exposed FUSE file with dd and fio, and the local
# ceiling of the same backing files, all against that round's baseline.
#
# Knobs: FF_BENCH_ROUNDS (default 3), FF_BENCH_TIME (default 5s per job),
# FF_BENCH_INIT_TIME (default 3s per initiator job); the fuzz section's
# FF_FUZZ_* knobs are described in bench_fuzz.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib/common.sh"

ff_need_pkgs python3 fio fuse3 coreutils
ff_need_cmd python3 fio dd fusermount3
[ "$(id -u)" -eq 0 ] || ff_die "the bench suite mounts FUSE: run it as root"

rounds=${FF_BENCH_ROUNDS:-3}
jobtime=${FF_BENCH_TIME:-5s}
inittime=${FF_BENCH_INIT_TIME:-3s}
out=$FF_WORK/bench
rm -rf "$out"
mkdir -p "$out"
bin=$(ff_release_bin ferrofab-nvmeof)

# The local ceiling runs on the same kind of backing file a namespace uses;
# the target serves its own copy (a backend locks its file).
img=$out/ceiling.img
nsimg=$out/ns1.img
port=$(ff_free_port)
nqn=nqn.2026-11.io.ferrofab:bench
cat >"$out/serve.toml" <<CFG
[[listener]]
address = "127.0.0.1:$port"

[[subsystem]]
nqn = "$nqn"
allow_any_host = true

[[subsystem.namespace]]
nsid = 1
path = "$nsimg"
size = "1GiB"
CFG

run_job() { # NAME ARGS... : one workload run, JSON into $out/NAME-rROUND.json
    local name=$1
    shift
    ff_say "round $round: $name"
    "$bin" bench "$@" --json >"$out/$name-r$round.json"
}

# Write every block once: reads of a sparse file's holes never touch the
# disk and would make the ceiling meaninglessly high.
ff_say "prefilling the ceiling image"
"$bin" bench --file "$img" --file-size 1GiB --pattern write --bs 1M --qd 4 --size 1GiB --json >"$out/prefill.json"
"$bin" bench --file "$nsimg" --file-size 1GiB --pattern write --bs 1M --qd 4 --size 1GiB --json >"$out/prefill-ns.json"

ff_say "starting the target on 127.0.0.1:$port"
"$bin" serve -c "$out/serve.toml" --no-watch >"$out/serve.log" 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true; python3 "$here/bench_initiator.py" "$bin" "$out" cleanup' EXIT
ff_wait_line "$out/serve.log" "ready, serving" 30 || ff_die "target did not start (see $out/serve.log)"
remote=(-a 127.0.0.1 -s "$port" -n "$nqn")

for ((round = 1; round <= rounds; round++)); do
    ff_say "round $round: loopback baseline"
    "$bin" bench --baseline --time 1s --json >"$out/baseline-r$round.json"
    run_job ceiling-randread-qd1 --file "$img" --pattern randread --bs 4k --qd 1 --time "$jobtime"
    run_job ceiling-randread-qd32 --file "$img" --pattern randread --bs 4k --qd 32 --time "$jobtime"
    run_job ceiling-randwrite-qd32 --file "$img" --pattern randwrite --bs 4k --qd 32 --time "$jobtime"
    run_job ceiling-read-128k --file "$img" --pattern read --bs 128k --qd 4 --time "$jobtime"
    run_job ceiling-mixed-verify --file "$img" --pattern mixed --rwmixread 70 --bs 4k --qd 8 --size 256MiB --verify
    run_job mem-randread-qd32 --mem 256MiB --pattern randread --bs 4k --qd 32 --time "$jobtime"
    for pm in interrupt adaptive; do
        run_job remote-randread-qd1-$pm "${remote[@]}" --poll-mode $pm --pattern randread --bs 4k --qd 1 --time "$jobtime"
    done
    run_job remote-randwrite-qd1 "${remote[@]}" --pattern randwrite --bs 4k --qd 1 --time "$jobtime"
    run_job remote-randread-qd32 "${remote[@]}" --pattern randread --bs 4k --qd 32 --queues 2 --time "$jobtime"
    run_job remote-randwrite-qd32 "${remote[@]}" --pattern randwrite --bs 4k --qd 32 --queues 2 --time "$jobtime"
    run_job remote-read-128k "${remote[@]}" --pattern read --bs 128k --qd 4 --time "$jobtime"
    run_job remote-mixed-verify "${remote[@]}" --pattern mixed --rwmixread 70 --bs 4k --qd 8 --queues 2 --size 256MiB --verify
    ff_say "round $round: initiator section"
    python3 "$here/bench_initiator.py" "$bin" "$out" "$round" "$inittime"
done

python3 - "$out" <<'EOF' >"$out/summary.md"
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
def med(xs):
    return statistics.median(xs) if xs else 0.0
def us(x):
    return f"{x:.1f}" if x > 0 else "-"
runs = {}
for f in sorted(out.glob("*-r*.json")):
    if f.name.startswith("init-"):
        continue  # the initiator section has its own table
    name = f.name.rsplit("-r", 1)[0]
    runs.setdefault(name, []).append(json.loads(f.read_text()))
print("# Benchmark summary (medians over rounds)\n")
print("## Loopback TCP baseline\n")
print("| test | ops/s | MB/s | p50 us | p99 us | CPU us/op |")
print("|---|---:|---:|---:|---:|---:|")
base = {}
for rep in runs.pop("baseline", []):
    for r in rep["results"]:
        base.setdefault(r["name"], []).append(r)
for name, rs in base.items():
    g = lambda f: med([f(r) for r in rs])
    print(f"| {name} | {g(lambda r: r['result']['ops_per_s']):.0f} | {g(lambda r: r['result']['mb_per_s']):.1f} "
          f"| {us(g(lambda r: r['result']['latency']['p50_us']))} | {us(g(lambda r: r['result']['latency']['p99_us']))} "
          f"| {g(lambda r: r['cpu']['per_op_us']):.2f} |")
print("\n## Workloads\n")
print("| run | IOPS | MB/s | p50 us | p99 us | p99.9 us | CPU us/IO | verify |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for name, rs in runs.items():
    g = lambda f: med([f(r) for r in rs])
    t = lambda k: g(lambda r: r["total"]["latency"][k])
    v = [r.get("verify") for r in rs if r.get("verify") is not None]
    vs = "-" if not v else ("OK" if all(x["failures"] == 0 for x in v) else "FAILED")
    print(f"| {name} | {g(lambda r: r['total']['ops_per_s']):.0f} | {g(lambda r: r['total']['mb_per_s']):.1f} "
          f"| {t('p50_us'):.1f} | {t('p99_us'):.1f} | {t('p999_us'):.1f} | {g(lambda r: r['cpu']['per_op_us']):.2f} | {vs} |")
EOF
python3 "$here/bench_initiator.py" "$bin" "$out" summary >>"$out/summary.md"
{
    echo
    echo "Commands of the initiator section (round 1; the ports change per run):"
    echo
    sed -n '/^# round 1$/,/^# round 2$/p' "$out/initiator-commands.txt" | grep -v '^# round' | sed 's/^/    /'
} >>"$out/summary.md"
kill "$serve_pid" 2>/dev/null || true
wait "$serve_pid" 2>/dev/null || true
rm -f "$img" "$nsimg"
cat "$out/summary.md"

# Authentication section: connect time for every hash x DH group (and
# none), and 4 KiB random-read IOPS at QD1/QD32 after authentication vs
# without in the same run (nvmeof-target/tests/auth_loopback.rs
# `auth_cost`; knobs FF_AUTH_BENCH_CONNECTS, _ROUNDS, _SECONDS).
ff_say "auth: connect time per hash and DH group, I/O after authentication"
ff_cargo test -q --release -p ferrofab-nvmeof-target --test auth_loopback auth_cost \
    -- --ignored --nocapture >"$out/auth.raw" || ff_die "the authentication benchmark failed (see $out/auth.raw)"
{
    echo "## Data-path authentication (our host against our target, loopback)"
    echo
    echo "Command: \`cargo test --release -p ferrofab-nvmeof-target --test auth_loopback auth_cost -- --ignored --nocapture\`"
    echo
    # The two tables, a blank line between them.
    awk '/^\| 4 KiB/ { print "" } /^\|/ { print }' "$out/auth.raw"
} >"$out/auth.md"
grep -q '^| QD32' "$out/auth.md" || ff_die "the authentication benchmark printed no I/O table (see $out/auth.raw)"
{ echo; cat "$out/auth.md"; } >>"$out/summary.md"

# SPDK section: SPDK's perf against our target, our initiator against
# SPDK's nvmf_tgt, perf against nvmf_tgt and the loopback ceiling, in one
# run (see bench_spdk.sh; skipped loudly when the SPDK tools are absent).
"$here/bench_spdk.sh"
{ echo; cat "$out/spdk.md"; } >>"$out/summary.md"

# Controller section: API throughput, watch latency, memory (see
# bench_controller.sh; its table is appended to summary.md).
"$here/bench_controller.sh"
{ echo; cat "$out/controller.md"; } >>"$out/summary.md"

# Replicated control plane (issue 17): creates/s on etcd against redb,
# watch delivery across replicas, failover after kill -9 of the leader,
# 1,000 simulated agents moving off a killed replica (see bench_ha.sh; its
# table is appended to summary.md).
"$here/bench_ha.sh"
{ echo; cat "$out/ha.md"; } >>"$out/summary.md"

# Agent section: single attach end to end, control plane at scale with
# simulated agents, 256 real volumes (see bench_agent.sh; its table is
# appended to summary.md).
"$here/bench_agent.sh"
{ echo; cat "$out/agent.md"; } >>"$out/summary.md"

# Idle section: CPU of a quiet `ferrofab dev` and of the standalone
# controller, storage agent and workstation agent with attachments, goal
# < 1% of a core each (see bench_idle.sh; its table is appended to
# summary.md).
"$here/bench_idle.sh"
{ echo; cat "$out/idle.md"; } >>"$out/summary.md"

# FUSE section (issue 20, items 3 and 4): fio on the exposed file against
# the initiator's own bench in the same run, and the microscope workload
# (see bench_fuse.sh; its table is appended to summary.md).
"$here/bench_fuse.sh"
{ echo; cat "$out/fuse.md"; } >>"$out/summary.md"

# ublk section (issue 20 item 3's design): /dev/ublkbN against the FUSE
# file and the initiator alone on one namespace, in one Linux 6.12 boot
# under qemu (see bench_ublk.sh; it appends its table to summary.md).
"$here/bench_ublk.sh"

# Fuzzing at scale: 10 million decoder inputs, the queue state machine,
# and a live `serve` under random and mutated PDUs from several
# connections (see bench_fuzz.sh; its table is appended to summary.md).
"$here/bench_fuzz.sh"
{ echo; cat "$out/fuzz/fuzz.md"; } >>"$out/summary.md"

# Terraform section: `terraform apply` of 200 volumes + 200 attachments
# across 10 workstations through terraform-provider-ferrofab, against the
# same layout through `ferrofab apply --wait` in the same run (see
# tests/terraform/driver.py bench).
bash "$here/terraform.sh" bench
python3 - "$FF_WORK/terraform/bench.json" >"$out/terraform.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("## Terraform\n")
print("| run | wall s | share waiting for convergence | ratio to `ferrofab apply --wait` | goal |")
print("|---|---:|---:|---:|---|")
print(f"| terraform apply, {r['volumes']} volumes + {r['attachments']} attachments, {r['workstations']} workstations "
      f"| {r['apply_wall_s']} | {r['waiting_share'] * 100:.0f}% | {r['ratio_to_baseline']} | < {r['goal_s']} s |")
print(f"| baseline: ferrofab apply --wait, same layout | {r['baseline_cli_apply_wait_s']} | - | 1.00 | |")
print(f"| terraform destroy of the same | {r['destroy_wall_s']} | - | - | |")
PY
{ echo; cat "$out/terraform.md"; } >>"$out/summary.md"
