#!/usr/bin/env bash
# Replicated control plane section of the `bench` suite (issue 17; called
# by bench.sh, also runnable alone: tests/suites/bench_ha.sh).
#
# Runs `cargo bench -p ferrofab-controller --bench ha` (Debian's etcd on
# loopback and the built controller binary, see controller/benches/ha.rs):
# durable creates/s from 16 clients on etcd against redb in the same run,
# watch delivery across replicas, failover after kill -9 of the leader,
# and 1,000 simulated agents' streams moving off a killed replica.
#
# Output: tests/.work/bench/ha.txt (raw lines) and tests/.work/bench/ha.md
# (appended to summary.md by bench.sh). Knobs: the FERROFAB_BENCH_HA_*
# variables described in controller/benches/ha.rs.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

out=$FF_WORK/bench
mkdir -p "$out"
# protoc builds the etcd client; etcd-server is the store under test.
ff_need_pkgs protobuf-compiler etcd-server
ff_need_cmd etcd protoc
cmd="cargo bench -p ferrofab-controller --bench ha"
ff_say "ha: $cmd"
(cd "$FF_REPO" && cargo bench -q -p ferrofab-controller --bench ha) \
    | tee "$out/ha.txt" | grep '^bench:' >&2 \
    || ff_die "ha benchmark failed"
grep -q '^bench: ha_agents_move_all' "$out/ha.txt" \
    || ff_die "ha benchmark printed no agent results (see $out/ha.txt)"

python3 - "$out/ha.txt" "$cmd" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF' >"$out/ha.md"
import sys
lines = open(sys.argv[1]).read().splitlines()
cmd, cores, load = sys.argv[2], sys.argv[3], sys.argv[4]
r = {}
for l in lines:
    if l.startswith("bench: "):
        _, name, value, unit = l.split()
        r[name] = (float(value), unit)
def v(name, fmt="{:,.0f}"):
    return fmt.format(r[name][0]) if name in r else "-"
print("## Replicated control plane (etcd)\n")
print(f"`{cmd}` ({cores} cores, load average {load}; etcd 3.4, one member on loopback)\n")
print("| measure | etcd | redb | etcd / redb |")
print("|---|---:|---:|---|")
print(f"| durable creates/s, 16 clients (median of rounds) | {v('ha_creates_etcd_16_clients')} "
      f"| {v('ha_creates_redb_16_clients')} | {v('ha_creates_etcd_over_redb', '{:.2f}')} (goal >= 0.5) |")
print(f"| create p50 / p99, 16 clients | {v('ha_create_p50_etcd', '{:.1f}')} / {v('ha_create_p99_etcd', '{:.1f}')} ms "
      f"| {v('ha_create_p50_redb', '{:.1f}')} / {v('ha_create_p99_redb', '{:.1f}')} ms | |")
print(f"| creates refused (placement overtaken 32 times), all rounds | {v('ha_creates_refused')} | | |")
print(f"| etcd transactions / ranges per create attempt | {v('ha_etcd_txns_per_create', '{:.2f}')} / "
      f"{v('ha_etcd_ranges_per_create', '{:.2f}')} | - | |")
print(f"| watch delivery from the create call, p50 / p99 (etcd: written on one replica, watched on another) "
      f"| {v('ha_watch_etcd_other_replica_p50', '{:.2f}')} / {v('ha_watch_etcd_other_replica_p99', '{:.2f}')} ms "
      f"| {v('ha_watch_redb_p50', '{:.2f}')} / {v('ha_watch_redb_p99', '{:.2f}')} ms | |")
print(f"| watch delivery after the acknowledgement, p99 "
      f"| {v('ha_watch_etcd_other_replica_after_ack_p99', '{:.2f}')} ms | {v('ha_watch_redb_after_ack_p99', '{:.2f}')} ms | |")
print()
print("| failover (three replicas, lease TTL 4 s) | p50 | max |")
print("|---|---:|---:|")
print(f"| kill -9 of the leader → next acknowledged create | {v('ha_failover_first_write_p50', '{:.1f}')} ms | {v('ha_failover_first_write_max', '{:.1f}')} ms |")
print(f"| kill -9 of the leader → another replica leads | {v('ha_failover_new_leader_p50')} ms | {v('ha_failover_new_leader_max')} ms |")
print()
n = v("ha_agents")
print(f"| {n} simulated agents, kill -9 of replica 1 | value |")
print("|---|---:|")
print(f"| initial connect of all | {v('ha_agents_initial_connect')} ms |")
print(f"| on replica 1 / 2 / 3 before the kill | {v('ha_agents_initially_on_replica_0')} / {v('ha_agents_initially_on_replica_1')} / {v('ha_agents_initially_on_replica_2')} |")
print(f"| replica 1's agents resumed elsewhere | {v('ha_agents_moved')} of {v('ha_agents_initially_on_replica_0')} |")
print(f"| time to resume: p50 / p99 / all | {v('ha_agents_move_p50')} / {v('ha_agents_move_p99')} / {v('ha_agents_move_all')} ms |")
print(f"| resumed in place (not older, same content) / content changed / older | "
      f"{v('ha_agents_resumed_in_place')} / {v('ha_agents_resumed_changed')} / {v('ha_agents_resumed_older')} |")
print(f"| replica 1's agents landed on replica 2 / replica 3 | {v('ha_agents_on_replica_1')} / {v('ha_agents_on_replica_2')} |")
print(f"| streams that restarted before the kill | {v('ha_agents_reconnects_before_kill')} |")
EOF
cat "$out/ha.md"
