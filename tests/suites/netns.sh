#!/usr/bin/env bash
# Suite `netns`: multi-host fault tests. The controller and every agent run
# as separate processes, each in its own network namespace:
#
#   netns ffnt-PID-hub : bridge br0 and the hub ends of the veth pairs (a switch)
#   netns ffnt-PID-ctl : controller  10.213.77.1/24   (eth0 <-> hub h-ctl)
#   netns ffnt-PID-s1  : storage     10.213.77.11/24  (eth0 <-> hub h-s1)
#   netns ffnt-PID-s2  : storage     10.213.77.12/24
#   netns ffnt-PID-ws1 : workstation 10.213.77.21/24
#   netns ffnt-PID-ws2 : workstation 10.213.77.22/24
#
# Nothing is created in the host's network namespace: the veth pairs are
# created inside the hub namespace and one end is moved into the node's.
# A fault is the hub end of a node's link going down (a pulled cable or a
# switch port shut). This kernel has no sch_netem, so `tc netem loss 100%`
# is not an option; link down drops every packet the same way, without a
# reset the endpoints could notice.
#
# Processes are started with `nsenter --net=...` (network namespace only;
# `ip netns exec` would also unshare the mount namespace and hide the
# workstations' FUSE exposures from everyone else), so exposures, pools
# and logs are plain paths under tests/.work/netns/.
#
# Tests (netns_faults.py; timings in its output):
#   1. link cut: the s1 <-> hub link goes down for 20 s while ws1 writes a
#      fsynced, stamped block stream through its exposure of a volume on s1
#      (longer than the initiator's 5 s keep-alive, so it really
#      reconnects; shorter than the 45 s ctrl_loss_tmo configured in the
#      controller). The stream must finish with no I/O error and every
#      block must read back, through the exposure and from the backing file.
#   2. partition: the controller's link goes down for 60 s. Meanwhile the
#      admin (CLI inside the controller's namespace, over 127.0.0.1)
#      creates a volume, attaches it, grows one and detaches one, and
#      verified writes keep succeeding on existing exposures. The test
#      asserts nothing converged during the partition, heals, and then
#      measures, by polling the workstations' exposure files and the
#      controller every 0.2 s, the time until every change is visible on
#      the data path; it must be within one resync interval (10 s).
#   3. agent restarts: ext4 on a loop device on ws2's exposure, mounted,
#      with a timed fsync'd write stream, through kill -9, a graceful
#      restart and an upgrade (a copy of the binary reporting another
#      version) of ws2's agent. The data-path holder must stay the same
#      process, the stream see no I/O error, the loop device keep its live
#      file, e2fsck -f -n be clean and every acknowledged block read back;
#      the longest write+fsync during each restart is printed.
#
# Everything is removed on exit, after failures too (trap): the
# workstations' data-path holders are stopped by netns_faults.py; processes in
# the namespaces are stopped (SIGTERM, then SIGKILL), FUSE mounts are
# lazily unmounted, the namespaces are deleted. Logs stay in
# tests/.work/netns/ for inspection.
set -euo pipefail
faults_pid=
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib/common.sh
source "$here/../lib/common.sh"
# shellcheck source=tests/lib/netns.sh
source "$here/../lib/netns.sh"

[ "$(id -u)" -eq 0 ] || ff_die "the netns suite creates network namespaces and mounts FUSE: run it as root"
ff_need_pkgs iproute2 util-linux mount fuse3 python3 iputils-ping
ff_need_cmd ip nsenter umount python3 ping
[ -e /dev/fuse ] || ff_die "/dev/fuse is missing: the workstation agents expose volumes through FUSE"

work=$FF_WORK/netns
prefix=ffnt-$$
hub=$prefix-hub
nodes=(ctl s1 s2 ws1 ws2)
declare -A addr=([ctl]=10.213.77.1 [s1]=10.213.77.11 [s2]=10.213.77.12 [ws1]=10.213.77.21 [ws2]=10.213.77.22)

# Stops whatever runs in our namespaces, unmounts, deletes the namespaces.
cleanup() {
    local rc=$? n
    set +e
    ff_stop_pid "${faults_pid:-}"
    ff_ns_stop_all
    # Not `mountpoint -q`: it fails on a FUSE mount whose agent was killed
    # (ENOTCONN), which is exactly the mount that needs removing.
    for n in ws1 ws2; do
        umount -l "$work/$n/volumes" 2>/dev/null
    done
    for n in "${nodes[@]}" hub probe; do
        [ -e "/run/netns/$prefix-$n" ] && ip netns del "$prefix-$n"
    done
    rm -f "$work"/s*/pool/* 2>/dev/null
    exit $rc
}

# Refuses to run on a kernel without network namespaces, veth or bridges.
check_kernel() {
    ip netns add "$prefix-probe" || ff_die "cannot create a network namespace (CONFIG_NET_NS)"
    ip -n "$prefix-probe" link add br0 type bridge || { ip netns del "$prefix-probe"; ff_die "no bridge support (CONFIG_BRIDGE)"; }
    ip -n "$prefix-probe" link add v0 type veth peer name v1 || { ip netns del "$prefix-probe"; ff_die "no veth support (CONFIG_VETH)"; }
    ip netns del "$prefix-probe"
}

setup_network() {
    local n
    ff_ns_setup_bridge
    # Everyone reaches everyone before the agents start.
    for n in s1 s2 ws1 ws2; do
        nsenter --net="/run/netns/$prefix-$n" ping -c1 -W5 "${addr[ctl]}" >/dev/null \
            || ff_die "node $n cannot reach the controller at ${addr[ctl]} over the bridge"
    done
}

trap cleanup EXIT INT TERM
ff_ns_sweep_stale ffnt
check_kernel
# FF_NETNS_BIN=DIR runs prebuilt ferrofab, ferrofab-controller and
# ferrofab-agent from DIR instead (e.g. to compare against another build).
if [ -n "${FF_NETNS_BIN:-}" ]; then
    bindir=$FF_NETNS_BIN
else
    ff_say "netns: building the release binaries"
    ff_cargo build --release --quiet --bin ferrofab-controller --bin ferrofab-agent --bin ferrofab \
        || ff_die "release build failed"
    bindir=${CARGO_TARGET_DIR:-$FF_REPO/target}/release
fi
for b in ferrofab ferrofab-controller ferrofab-agent; do
    [ -x "$bindir/$b" ] || ff_die "no $b in $bindir"
done

rm -rf "$work"
mkdir -p "$work"
ff_say "netns: namespaces $prefix-{hub,$(IFS=,; echo "${nodes[*]}")} on 10.213.77.0/24"
setup_network

# In the background and waited for, so that a SIGTERM or SIGINT to this
# script runs the trap at once (bash defers traps until a foreground child
# exits); the trap passes it on to netns_faults.py, which stops its daemons.
python3 "$here/netns_faults.py" --bin "$bindir" --work "$work" --prefix "$prefix" &
faults_pid=$!
wait "$faults_pid"
