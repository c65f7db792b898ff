# Network-namespace plumbing shared by the `netns` and `ha` suites. The
# caller sets `prefix` (e.g. ffnt-PID), `hub` ($prefix-hub), the array
# `nodes` and the associative array `addr` (node -> IPv4 on a /24).
#
# Nothing is created in the host's network namespace: the veth pairs are
# created inside the hub namespace (bridge br0, a switch) and one end is
# moved into each node's namespace as eth0.

# ff_stop_pid PID : SIGTERM, then SIGKILL if it is still there after 60 s
# (the suites' Python drivers stop their daemons on SIGTERM).
ff_stop_pid() {
    local i
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1"
    for ((i = 0; i < 600; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null
    return 0
}

# The pids of every process in our node namespaces.
ff_ns_pids() {
    local n
    for n in "${nodes[@]}"; do
        [ -e "/run/netns/$prefix-$n" ] && ip netns pids "$prefix-$n" 2>/dev/null
    done
    return 0
}

# SIGTERM to everything in our namespaces, SIGKILL to what is left 15 s later.
ff_ns_stop_all() {
    local i pids
    mapfile -t pids < <(ff_ns_pids)
    [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
    for ((i = 0; i < 150; i++)); do
        [ -z "$(ff_ns_pids)" ] && break
        sleep 0.1
    done
    mapfile -t pids < <(ff_ns_pids)
    [ ${#pids[@]} -gt 0 ] && kill -KILL "${pids[@]}" 2>/dev/null
    return 0
}

# The hub with its bridge, and one namespace per node linked to it.
ff_ns_setup_bridge() {
    local n ns
    ip netns add "$hub"
    ip -n "$hub" link set lo up
    ip -n "$hub" link add br0 type bridge
    ip -n "$hub" link set br0 up
    for n in "${nodes[@]}"; do
        ns=$prefix-$n
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$hub" link add "h-$n" type veth peer name eth0 netns "$ns"
        ip -n "$hub" link set "h-$n" master br0 up
        ip -n "$ns" addr add "${addr[$n]}/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
}

# ff_ns_sweep_stale TAG : namespaces TAG-PID-* of an earlier run that was
# SIGKILLed (its pid is in the name and gone): stop what still runs there
# and delete them.
ff_ns_sweep_stale() {
    local ns pid pids
    for ns in $(ip netns list | awk -v re="^$1-[0-9]+-" '$1 ~ re {print $1}'); do
        pid=${ns#"$1"-}
        pid=${pid%%-*}
        kill -0 "$pid" 2>/dev/null && continue
        ff_say "$1: removing $ns left by an earlier run (pid $pid is gone)"
        mapfile -t pids < <(ip netns pids "$ns")
        [ ${#pids[@]} -gt 0 ] && kill -KILL "${pids[@]}"
        ip netns del "$ns"
    done
    return 0
}
