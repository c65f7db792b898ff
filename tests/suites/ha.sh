#!/usr/bin/env bash
# Suite `ha`: a replicated control plane on etcd, each process in its own
# network namespace on one bridge (10.213.78.0/24, set up as in `netns`):
#
#   ffha-PID-e1..e3 : etcd members        10.213.78.1-3   (client TLS, :2379)
#   ffha-PID-c1..c3 : controller replicas 10.213.78.11-13 (:7443, lease TTL 4 s)
#   ffha-PID-s1     : storage agent       10.213.78.21
#   ffha-PID-ws1    : workstation agent   10.213.78.31
#   ffha-PID-adm    : the admin's CLI and the history watcher 10.213.78.40
#
# One storage and one workstation agent (not the issue's two and three):
# the tests below are about the control plane, and each extra agent adds
# start-up time to a suite that must stay short.
#
# Tests (ha_checks.py; figures in its output):
#   1. kill -9 of the leader during 120 creates and attaches from four
#      clients (each with the endpoints in another order): every
#      acknowledged change is present afterwards, none twice, the nearly
#      full pool is not over-committed, every attachment converges on the
#      workstation; prints the failover time (kill -> next answered
#      write) and the new leader's takeover time.
#   2. the leader partitioned from etcd (blackhole routes in its namespace,
#      agents and clients still reach it): a new leader within the lease
#      TTL plus one check; a burst volume expiring during the partition is
#      deleted exactly once (one "expired burst volume deleted" line in all
#      logs, one DELETED event seen by the watcher).
#   3. rolling restart of all three controllers while a client keeps
#      creating and deleting: every acknowledged create is present, the
#      workstation's exposures stay and converge.
#   4. etcd quorum loss (e2 and e3 cut off at the bridge): a write is
#      refused naming etcd, lists from the replicas' caches go on, an
#      exposure on ws1 reads the same; after the heal writes go through.
#   5. backup, then the whole etcd cluster lost (every member's data
#      deleted) and a new one restored from the backup: every volume comes
#      back with its identity, the workstation's exposures read the same,
#      a new attachment converges. (After the history check: the new
#      cluster starts its revisions anew.)
#   1b. (ha_terraform.py) kill -9 of the replica the Terraform provider
#      uses (the leader, first in its endpoints) in the middle of an
#      apply of 30 volumes at parallelism 10 with the real Terraform
#      1.0.3: the apply succeeds, the state matches the controller (same
#      UUIDs), a second plan is empty, no volume is created twice; one
#      `ferrofab wait` started before the kill polls on through it and
#      returns. Prints how long the apply paused on the kill.
#   Over tests 1-4, the watcher's recorded history (WatchVolumes through
#   whichever replica answers, resumed from its last revision) is checked:
#   per object, revisions strictly increase, every acknowledged version
#   appears, nothing follows a delete but a new object.
set -euo pipefail
checks_pid=
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source=tests/lib/netns.sh
source "$here/../lib/netns.sh"

[ "$(id -u)" -eq 0 ] || ff_die "the ha suite creates network namespaces and mounts FUSE: run it as root"
ff_need_pkgs iproute2 util-linux mount fuse3 python3 iputils-ping etcd-server
ff_need_cmd ip nsenter umount python3 ping etcd
# shellcheck source=tests/lib/terraform.sh
source "$here/../lib/terraform.sh"
FF_HA_TERRAFORM=$(ff_terraform_install "$FF_WORK/terraform-1.0.3")
export FF_HA_TERRAFORM
[ -e /dev/fuse ] || ff_die "/dev/fuse is missing: the workstation agent exposes volumes through FUSE"

work=$FF_WORK/ha
prefix=ffha-$$
hub=$prefix-hub
nodes=(e1 e2 e3 c1 c2 c3 s1 ws1 adm)
declare -A addr=([e1]=10.213.78.1 [e2]=10.213.78.2 [e3]=10.213.78.3
                 [c1]=10.213.78.11 [c2]=10.213.78.12 [c3]=10.213.78.13
                 [s1]=10.213.78.21 [ws1]=10.213.78.31 [adm]=10.213.78.40)

cleanup() {
    local rc=$? n
    set +e
    ff_stop_pid "${checks_pid:-}"
    ff_ns_stop_all
    umount -l "$work/ws1/volumes" 2>/dev/null
    for n in "${nodes[@]}" hub; do
        [ -e "/run/netns/$prefix-$n" ] && ip netns del "$prefix-$n"
    done
    rm -f "$work"/s1/pool/* 2>/dev/null
    exit $rc
}

setup_network() {
    local n
    ff_ns_setup_bridge
    for n in c1 s1 ws1 adm; do
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
