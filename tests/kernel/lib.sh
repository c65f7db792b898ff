# tests/kernel/lib.sh - host-side helpers for tests that drive a qemu guest
# started with run-guest.sh in the background. Source it from bash:
#     . tests/kernel/lib.sh
#
#   ff_free_port                    print a TCP port on 127.0.0.1 that nobody
#                                   listens on (for --hostfwd)
#   ff_wait_for_log LOG REGEX SEC [PID]
#                                   wait until the console log LOG has a line
#                                   matching REGEX (grep -E); fails after SEC
#                                   seconds or as soon as PID (run-guest.sh)
#                                   has exited
#   ff_use_kernel_612               make run-guest.sh boot Debian's newest 6.12
#                                   kernel (NVMe in-band authentication), kept in
#                                   its own cache (tests/.cache/k612)
#   ff_release_guest HOSTPORT [SEC] connect to 127.0.0.1:HOSTPORT (forwarded
#                                   to the port the guest's ff_wait_release
#                                   listens on) to let the guest script go on
#
# Typical use:
#   gport=$(ff_free_port); rport=$(ff_free_port)
#   log=$(mktemp); tests/kernel/run-guest.sh --script guest.sh --log "$log" \
#       --hostfwd tcp:127.0.0.1:$gport-:4420 --hostfwd tcp:127.0.0.1:$rport-:5555 \
#       --env RELEASE_PORT=5555 & pid=$!
#   ff_wait_for_log "$log" '^FERROFAB-GUEST-READY' 120 "$pid"
#   ... talk to 127.0.0.1:$gport ...
#   ff_release_guest "$rport"; wait "$pid"     # exit code of the guest script
# shellcheck shell=bash

ff_free_port() {
    local _ p
    for _ in $(seq 1 100); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        # connection refused => nothing listens there
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    echo "ff_free_port: no free port found" >&2
    return 1
}

ff_wait_for_log() {
    local log=$1 re=$2 sec=$3 pid=${4:-} deadline
    deadline=$((SECONDS + sec))
    while :; do
        if [ -f "$log" ] && grep -a -q -E "$re" "$log"; then
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            echo "ff_wait_for_log: guest runner $pid exited before '$re' appeared in $log" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "ff_wait_for_log: '$re' did not appear in $log within ${sec}s" >&2
            return 1
        fi
        sleep 0.2
    done
}

ff_release_guest() {
    local port=$1 sec=${2:-30} deadline reply
    deadline=$((SECONDS + sec))
    # slirp accepts the connection even before the guest listens and then
    # resets it: retry until the guest's ff_wait_release answers.
    while :; do
        reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && read -r -t 5 line <&3 \
            && printf '%s' "$line") 2>/dev/null || true)
        [ "$reply" = ferrofab-released ] && return 0
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "ff_release_guest: guest did not answer on 127.0.0.1:$port within ${sec}s" >&2
            return 1
        fi
        sleep 0.3
    done
}

ff_use_kernel_612() {
    local repo
    repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    export FERROFAB_TEST_CACHE=${FERROFAB_TEST_CACHE_612:-$repo/tests/.cache/k612}
    if [ -z "${FERROFAB_KERNEL_PKG:-}" ]; then
        FERROFAB_KERNEL_PKG=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9]+\+deb12-amd64$' 2>/dev/null \
            | awk '{print $1}' | sort -V | tail -n1)
        [ -n "$FERROFAB_KERNEL_PKG" ] || { echo "no linux-image-6.12.*+deb12-amd64 package known to apt" >&2; return 1; }
    fi
    export FERROFAB_KERNEL_PKG
}
