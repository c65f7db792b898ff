#!/usr/bin/env bash
# Controller section of the `bench` suite (called at the end of bench.sh;
# also runnable alone: tests/suites/bench_controller.sh).
#
# Runs `cargo bench -p ferrofab-controller --bench controller` (the built
# controller binary over mTLS on loopback, see controller/benches/) and
# turns its `bench:` lines into a table with ratios against the baselines
# measured in the same run (raw redb durable commits from one writer, the
# store layer with 16 writers).
#
# Output: tests/.work/bench/controller.txt (raw lines) and
# tests/.work/bench/controller.md (appended to summary.md by bench.sh).
# Knob: FF_BENCH_CREATES (default 10000 creates per run).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

out=$FF_WORK/bench
mkdir -p "$out"
# protoc builds the etcd client; etcd-server runs the store_backends bench.
ff_need_pkgs protobuf-compiler etcd-server
creates=${FF_BENCH_CREATES:-10000}
cmd="FERROFAB_BENCH_CREATES=$creates cargo bench -p ferrofab-controller --bench controller"
ff_say "controller: $cmd"
(cd "$FF_REPO" && FERROFAB_BENCH_CREATES=$creates cargo bench -q -p ferrofab-controller --bench controller) \
    | tee "$out/controller.txt" | grep '^bench:' >&2 \
    || ff_die "controller benchmark failed"
grep -q '^bench: rss_1000_watch_streams' "$out/controller.txt" \
    || ff_die "controller benchmark printed no results"
ff_say "controller: cargo bench -p ferrofab-controller --bench store_backends (redb vs etcd)"
(cd "$FF_REPO" && cargo bench -q -p ferrofab-controller --bench store_backends) \
    | tee -a "$out/controller.txt" | grep '^bench:' >&2 \
    || ff_die "store backends benchmark failed"

python3 - "$out/controller.txt" "$cmd" "$(nproc)" <<'EOF' >"$out/controller.md"
import sys
lines = open(sys.argv[1]).read().splitlines()
cmd, cores = sys.argv[2], sys.argv[3]
r = {}
for l in lines:
    if l.startswith("bench: "):
        _, name, value, unit = l.split()
        r[name] = (float(value), unit)
raw = r["redb_raw_durable_commits_per_s_1_writer"][0]
store16 = r["store_durable_commits_per_s_16_writers"][0]
print("## Controller\n")
print(f"`{cmd}` ({cores} cores; durable = fsynced before the reply)\n")
print("| measure | value | vs baseline |")
print("|---|---:|---|")
def row(name, label, base=None, base_label=""):
    if name not in r:
        return
    v, unit = r[name]
    ratio = f"{v / base:.2f}x {base_label}" if base else ""
    print(f"| {label} | {v:,.1f} {unit} | {ratio} |")
row("redb_raw_durable_commits_per_s_1_writer", "baseline: raw redb durable commits, 1 writer")
raw_first = r.get("redb_raw_1_writer_first_fifth", (0, ""))[0]
row("redb_raw_1_writer_last_fifth", "baseline: raw redb, 1 writer, last fifth", raw_first, "first fifth")
row("store_durable_commits_per_s_16_writers", "baseline: store layer (group commit), 16 writers", raw, "raw redb")
for tag, label in [("1_client", "1 client"), ("16_clients", "16 clients"),
                   ("16_clients_32_agents", "16 clients, 32 agents watching")]:
    base, bl = (raw, "raw redb 1 writer") if tag == "1_client" else (store16, "store 16 writers")
    row(f"creates_per_s_{tag}", f"creates/s, {label}", base, bl)
    first = r.get(f"creates_per_s_{tag}_first_fifth", (0, ""))[0]
    row(f"creates_per_s_{tag}_last_fifth", f"creates/s, {label}, last fifth", first, "first fifth")
    row(f"create_latency_{tag}_p50", f"create latency p50, {label}")
    row(f"create_latency_{tag}_p99", f"create latency p99, {label}")
row("watch_delivery_p50", "watch delivery p50")
row("watch_delivery_p99", "watch delivery p99")
row("rss_1000_watch_streams", "RSS with 1,000 open watch streams")
row("rss_after_creates_with_agents", "RSS after the agents run")
row("desired_state_snapshots_sent", "desired-state snapshots sent to agents")
redb16 = r.get("store_redb_creates_16_clients", (0, ""))[0]
row("store_redb_creates_16_clients", "store: redb creates, 16 clients (store_backends)")
row("store_etcd_creates_16_clients", "store: etcd creates, 16 clients (goal >= 0.5x redb)", redb16, "redb")
row("store_redb_create_p99", "store: redb create p99")
row("store_etcd_create_p99", "store: etcd create p99")
EOF
cat "$out/controller.md"
