#!/usr/bin/env bash
# Suite `ha`: a replicated control plane on etcd, each process in its own
# network namespace on one bridge (10.213.78.0/24, set up as in `netns`):
#
#   ffha-PID-e1..e3 : etcd members        10.213.78.1-3   (client TLS, :2379)
#   ffha-PID-c1..c3 : controller replicas 10.213.78.11-13 (gRPC :7443, HTTP :7444,
#                     lease TTL 4 s)
#   ffha-PID-s1,s2  : storage agents      10.213.78.21-22
#   ffha-PID-ws1..3 : workstation agents  10.213.78.31-33
#   ffha-PID-adm    : the admin's CLI and the history watcher 10.213.78.40
#
# Tests (ha_checks.py; figures in its output):
#   1. kill -9 of the leader during a stream of 500 creates from five
#      clients (each with the endpoints in another order), every 8th
#      acknowledged volume of a client attached to one of the three
#      workstations: four clients fill two 180-volume pools (p-s1 on s1,
#      p-s2 on s2) past their capacity, the fifth a tenant's 60-volume
#      quota. Every acknowledged create and attachment is present
#      afterwards with its uid, none twice, no pool or quota
#      over-committed, every attachment converges on its workstation;
#      prints the failover time (kill -> next answered write) and the new
#      leader's takeover time.
#   2. the leader partitioned from etcd (blackhole routes in its namespace,
#      agents and clients still reach it): a new leader within the lease
#      TTL plus one check; a burst volume expiring during the partition is
#      deleted exactly once (one "expired burst volume deleted" line in all
#      logs, one DELETED event seen by the watcher).
#   3. rolling restart of all three controllers while a client keeps
#      creating and deleting: every acknowledged create is present, the
#      workstations' exposures stay and converge.
#   4. one etcd member (e3) cut off at the bridge: writes go on; then a
#      second (e2), so no quorum: a write is refused with gRPC UNAVAILABLE
#      (the CLI's "controller unavailable: store unavailable: etcd has no
#      quorum ...") and HTTP 503 UNAVAILABLE from the HTTP API, lists from
#      the replicas' caches go on, an exposure reads the same; after the
#      heal writes go through.
#   5. backup, then the whole etcd cluster lost (every member's data
#      deleted) and a new one restored from the backup: every volume comes
#      back with its identity, every exposure reads the same, a new
#      attachment converges.
#   After each test, the recorded history (WatchVolumes and
#   WatchAttachments through whichever replica answers, resumed from the
#   last revision; a new recorder for test 5's new etcd cluster) is
#   checked: per object, revisions strictly increase and each event
#   carries its own version, nothing follows a delete but a new object,
#   every acknowledged version appears, the recorder never had to start
#   over (no gap), and its view ends equal to what the replicas list.
#   1b. (ha_terraform.py, right after test 1) kill -9 of the replica the
#      Terraform provider uses (the leader, first in its endpoints) in the
#      middle of an apply of 30 volumes at parallelism 10 with the real
#      Terraform 1.0.3: the apply succeeds, the state matches the
#      controller (same UUIDs), a second plan is empty, no volume is
#      created twice; one `ferrofab wait` started before the kill polls on
#      through it and returns. Prints how long the apply paused on the kill.
set -euo pipefail
checks_pid=
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source=tests/lib/netns.sh
source "$here/../lib/netns.sh"

[ "$(id -u)" -eq 0 ] || ff_die "the ha suite creates network namespaces and mounts FUSE: run it as root"
ff_need_pkgs iproute2 util-linux mount fuse3 python3 iputils-ping etcd-server curl
ff_need_cmd ip nsenter umount python3 ping etcd curl
# shellcheck source=tests/lib/terraform.sh
source "$here/../lib/terraform.sh"
FF_HA_TERRAFORM=$(ff_terraform_install "$FF_WORK/terraform-1.0.3")
export FF_HA_TERRAFORM
[ -e /dev/fuse ] || ff_die "/dev/fuse is missing: the workstation agent exposes volumes through FUSE"

work=$FF_WORK/ha
prefix=ffha-$$
hub=$prefix-hub
workstations=(ws1 ws2 ws3)
storage=(s1 s2)
nodes=(e1 e2 e3 c1 c2 c3 "${storage[@]}" "${workstations[@]}" adm)
declare -A addr=([e1]=10.213.78.1 [e2]=10.213.78.2 [e3]=10.213.78.3
                 [c1]=10.213.78.11 [c2]=10.213.78.12 [c3]=10.213.78.13
                 [s1]=10.213.78.21 [s2]=10.213.78.22
                 [ws1]=10.213.78.31 [ws2]=10.213.78.32 [ws3]=10.213.78.33
                 [adm]=10.213.78.40)

cleanup() {
    local rc=$? n
    set +e
    ff_stop_pid "${checks_pid:-}"
    ff_ns_stop_all
    for n in "${workstations[@]}"; do
        umount -l "$work/$n/volumes" 2>/dev/null
    done
    for n in "${nodes[@]}" hub; do
        [ -e "/run/netns/$prefix-$n" ] && ip netns del "$prefix-$n"
    done
    for n in "${storage[@]}"; do
        rm -f "$work/$n"/pool/* "$work/$n"/pool2/* 2>/dev/null
    done
    exit $rc
}

setup_network() {
    local n
    ff_ns_setup_bridge
    for n in c1 "${storage[@]}" "${workstations[@]}" adm; do
        nsenter --net="/run/netns/$prefix-$n" ping -c1 -W5 "${addr[e1]}" >/dev/null \
            || ff_die "$n cannot reach ${addr[e1]} over the bridge"
    done
}

trap cleanup EXIT INT TERM
ff_ns_sweep_stale ffha
# FF_HA_BIN=DIR runs prebuilt binaries from DIR (ferrofab,
# ferrofab-controller, ferrofab-agent, terraform-provider-ferrofab,
# examples/ha_watch).
if [ -n "${FF_HA_BIN:-}" ]; then
    bindir=$FF_HA_BIN
else
    ff_say "ha: building the release binaries"
    ff_cargo build --release --quiet --bin ferrofab-controller --bin ferrofab-agent --bin ferrofab \
        || ff_die "release build failed"
    ff_cargo build --release --quiet -p terraform-provider-ferrofab \
        || ff_die "release build of terraform-provider-ferrofab failed"
    ff_cargo build --release --quiet -p ferrofab-controller --example ha_watch \
        || ff_die "release build of the ha_watch example failed"
    bindir=${CARGO_TARGET_DIR:-$FF_REPO/target}/release
fi
for b in ferrofab ferrofab-controller ferrofab-agent terraform-provider-ferrofab examples/ha_watch; do
    [ -x "$bindir/$b" ] || ff_die "no $b in $bindir"
done

rm -rf "$work"
mkdir -p "$work"
ff_say "ha: namespaces $prefix-{hub,$(IFS=,; echo "${nodes[*]}")} on 10.213.78.0/24"
setup_network

python3 "$here/ha_checks.py" --bin "$bindir" --work "$work" --prefix "$prefix" &
checks_pid=$!
wait "$checks_pid"
