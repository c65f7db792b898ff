#!/usr/bin/env bash
# tests/kernel/kdriver.sh - the agent's `kernel` data-path driver against
# Linux 6.1 (nvmet + nvme-tcp) in one qemu guest, managed by a real
# controller from a layout applied on the host.
#
# Usage: kdriver.sh [--auth|--auth-unsupported] [--timeout SEC] [--keep]
#
# Host: ferrofab-controller, agent `hs` (storage, builtin target) and agent
# `hw` (workstation, builtin initiator + FUSE). Guest: agent `kg` (storage
# and workstation, data_path = "kernel"), reached through slirp (guest ->
# host 10.0.2.2) and hostfwd (host -> guest nvmet port). One guest boot
# covers, in order:
#   1. storage guest: volume vk exported by nvmet, attached to host `hw`:
#      the host writes and reads back a pattern, the guest finds it in the
#      backing file; grow (resize through revalidate_size) reaches the host;
#      revoke (attachment deleted) removes the host from allowed_hosts;
#   2. workstation guest: volume vh on the host's builtin target attached
#      to `kg`: /dev/nvmeXnY and the symlink appear, the guest writes a
#      pattern, the host finds it in the backing file; detach removes the
#      controller and its block device;
#   3. both sides kernel: volume vk2 exported and attached inside the guest,
#      written and read back through the kernel host, found in the file;
#   4. adoption: the guest agent restarts while the guest reads vk2 in a
#      loop: no read error, same controller; a foreign nvmet subsystem made
#      by hand before the agent started survives every reconcile untouched;
#      finally vk2 is detached.
# With --auth the guest runs Linux 6.12 instead (NVMe in-band
# authentication), the controller has `[auth] require = true` and, after
# the same three attachments come up, the scenarios of kdriver-auth.sh run
# instead of 1-4: keys from the controller on both kernel sides and on the
# built-in ones, mkfs and I/O over the authenticated paths, a key rotation
# under a stream of writes, and hosts without the key refused.
# With --auth-unsupported the guest stays on Linux 6.1 (no in-band
# authentication) under a controller requiring it: vk2-kg must report
# AuthUnsupported on both sides, naming the kernel options needed.
# FF_KDRIVER_PROFILE=debug uses debug binaries (default release).
# Exit status 0 when everything passed; the last line is
# "kdriver: N passed, N failed".
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=/dev/null
. "$HERE/lib.sh"

TIMEOUT=1200
KEEP=0
AUTH=0
while [ $# -gt 0 ]; do
    case "$1" in
        --auth) AUTH=1; shift;;
        --auth-unsupported) AUTH=2; shift;;
        --timeout) TIMEOUT=${2:?}; shift 2;;
        --keep) KEEP=1; shift;;
        -h|--help) sed -n '2,39p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0;;
        *) echo "kdriver: unknown argument '$1'" >&2; exit 2;;
    esac
done

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "kdriver: PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "kdriver: FAIL: $*" >&2; }
say() { echo "kdriver: $*"; }

PROFILE=${FF_KDRIVER_PROFILE:-release}
echo "kdriver: building ($PROFILE)"
(cd "$REPO" && cargo build -q -j2 $([ "$PROFILE" = release ] && echo --release) \
    --bin ferrofab-agent --bin ferrofab-controller --bin ferrofab)
BIN=${CARGO_TARGET_DIR:-$REPO/target}/$PROFILE
FF=$BIN/ferrofab
GUEST_ARGS=()
if [ "$AUTH" = 1 ]; then
    ff_use_kernel_612
    GUEST_ARGS+=(--module nvme-keyring)
fi

WORK=$(mktemp -d /tmp/ff-kdriver.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    # The workstation's data-path holder outlives its agent by design.
    if [ -S "$WORK/hw/state/holder.sock" ]; then
        "$BIN/ferrofab-agent" holder stop --state-dir "$WORK/hw/state" --timeout 20s >/dev/null 2>&1 || true
    fi
    fusermount3 -u "$WORK/hw/volumes" 2>/dev/null || true
    if [ "$KEEP" = 1 ]; then echo "kdriver: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- host side
"$FF" pki init --dir "$WORK/pki" >/dev/null 2>&1
"$FF" pki issue --dir "$WORK/pki" --identity admin >/dev/null 2>&1
for n in hs hw kg; do
    mkdir -p "$WORK/$n"
    "$FF" pki issue --dir "$WORK/pki" --identity "node:$n" --out "$WORK/$n" >/dev/null
    cp "$WORK/$n"/*.crt "$WORK/$n/node.crt.tmp"
    cp "$WORK/$n"/*.key "$WORK/$n/node.key.tmp"
    mv "$WORK/$n/node.crt.tmp" "$WORK/$n/node.crt"
    mv "$WORK/$n/node.key.tmp" "$WORK/$n/node.key"
    cp "$WORK/pki/ca.crt" "$WORK/$n/ca.crt"
done

# The 6.1 guest's kernel host has no in-band authentication: that cluster
# must let hosts without a key in ([auth] require is on by default in new
# clusters). --auth (6.12) and --auth-unsupported (6.1) require it.
cat >"$WORK/controller.toml" <<EOF
listen = "127.0.0.1:0"
store_path = "$WORK/store.redb"
[pki]
dir = "$WORK/pki"
$([ "$AUTH" != 0 ] && printf '[auth]\nrequire = true\n' || printf '[auth]\nrequire = false\n')
EOF
mkfifo "$WORK/ctl.out"
"$BIN/ferrofab-controller" --config "$WORK/controller.toml" >"$WORK/ctl.out" 2>"$WORK/controller.log" &
PIDS+=($!)
read -r -t 60 ready <"$WORK/ctl.out" || { cat "$WORK/controller.log" >&2; exit 1; }
CTL=$(tr ' ' '\n' <<<"$ready" | sed -n 's/^grpc=//p')
CTLPORT=${CTL##*:}
[ -n "$CTLPORT" ] || { echo "kdriver: controller said '$ready'" >&2; exit 1; }
say "controller at $CTL"
cat >"$WORK/client.toml" <<EOF
endpoint = "https://127.0.0.1:$CTLPORT"
[tls]
ca = "$WORK/pki/ca.crt"
cert = "$WORK/pki/admin.crt"
key = "$WORK/pki/admin.key"
EOF
ff() { "$FF" --config "$WORK/client.toml" "$@"; }

HSPORT=$(ff_free_port)
KPORT=$(ff_free_port)
CMDPORT=$(ff_free_port)
uuid() { cat /proc/sys/kernel/random/uuid; }
HW_ID=$(uuid); HW_NQN=nqn.2014-08.org.nvmexpress:uuid:$HW_ID
KG_ID=$(uuid); KG_NQN=nqn.2014-08.org.nvmexpress:uuid:$KG_ID
# --auth: a workstation that never runs an agent, so it gets no key (in
# the layout once WITH_WS0=1).
WS0_ID=$(uuid); WS0_NQN=nqn.2014-08.org.nvmexpress:uuid:$WS0_ID
WITH_WS0=0
mkdir -p "$WORK/hpool" "$WORK/hw/state" "$WORK/hw/volumes" "$WORK/hs/state"
echo "$HW_NQN" >"$WORK/hw/state/hostnqn"
echo "$HW_ID" >"$WORK/hw/state/hostid"

agent_config() { # NODE ROLES EXTRA...
    local n=$1 roles=$2
    shift 2
    cat <<EOF
node = "$n"
roles = [$roles]
controller_endpoints = ["https://127.0.0.1:$CTLPORT"]
state_dir = "$WORK/$n/state"
api_socket = "$WORK/$n/agent.sock"
expose_dir = "$WORK/$n/volumes"
resync_interval = "5s"
$(printf '%s\n' "$@")
[tls]
ca = "$WORK/$n/ca.crt"
cert = "$WORK/$n/node.crt"
key = "$WORK/$n/node.key"
EOF
}
agent_config hs '"storage"' "data_listen = [\"127.0.0.1:$HSPORT\"]" \
    "[pools.hpool]" "path = \"$WORK/hpool\"" >"$WORK/hs/agent.toml"
agent_config hw '"workstation"' >"$WORK/hw/agent.toml"

# The guest's agent: kernel driver for both roles.
mkdir -p "$WORK/guest"
cat >"$WORK/guest/agent.toml" <<EOF
node = "kg"
roles = ["storage", "workstation"]
data_path = "kernel"
controller_endpoints = ["https://10.0.2.2:$CTLPORT"]
data_listen = ["0.0.0.0:$KPORT"]
state_dir = "/var/lib/ferrofab/agent"
api_socket = "/run/ferrofab/agent.sock"
expose_dir = "/run/ferrofab/volumes"
resync_interval = "5s"
[tls]
ca = "/etc/ferrofab/ca.crt"
cert = "/etc/ferrofab/node.crt"
key = "/etc/ferrofab/node.key"
server_name = "localhost"
[pools.kpool]
path = "/tmp/kpool"
EOF

LAYOUT=$WORK/layout.toml
write_layout() { # VK_SIZE ATTACHMENTS...
    local vk_size=$1 a
    shift
    cat <<EOF
[[tenant]]
name = "t"
allowed_nodes = ["hw", "kg"$([ "$WITH_WS0" = 1 ] && echo ', "ws0"')]

[[node]]
name = "hs"
roles = ["storage"]
addresses = ["10.0.2.2:$HSPORT"]

[[node]]
name = "hw"
roles = ["workstation"]
host_nqn = "$HW_NQN"

[[node]]
name = "kg"
roles = ["storage", "workstation"]
addresses = ["127.0.0.1:$KPORT"]
host_nqn = "$KG_NQN"

[[pool]]
name = "hpool"
node = "hs"
backing = "directory"
path = "$WORK/hpool"
capacity = "1GiB"

[[pool]]
name = "kpool"
node = "kg"
backing = "directory"
path = "/tmp/kpool"
capacity = "256MiB"

[[volume]]
name = "vk"
tenant = "t"
size = "$vk_size"
pool = "kpool"

[[volume]]
name = "vh"
tenant = "t"
size = "32MiB"
pool = "hpool"

[[volume]]
name = "vk2"
tenant = "t"
size = "32MiB"
pool = "kpool"
EOF
    if [ "$WITH_WS0" = 1 ]; then
        cat <<EOF

[[node]]
name = "ws0"
roles = ["workstation"]
host_nqn = "$WS0_NQN"

[[volume]]
name = "vr"
tenant = "t"
size = "16MiB"
pool = "kpool"
EOF
    fi
    for a in "$@"; do
        cat <<EOF

[[attachment]]
name = "$a"
volume = "${a%%-*}"
node = "${a#*-}"
mode = "read-write"
EOF
    done
}
write_layout 64MiB >"$LAYOUT"
ff apply -f "$LAYOUT" --yes >/dev/null 2>&1

"$BIN/ferrofab-agent" --config "$WORK/hs/agent.toml" run >"$WORK/hs.log" 2>&1 &
PIDS+=($!)
"$BIN/ferrofab-agent" --config "$WORK/hw/agent.toml" run >"$WORK/hw.log" 2>&1 &
PIDS+=($!)

# ---------------------------------------------------------------- guest
cp "$BIN/ferrofab-agent" "$WORK/guest/ferrofab-agent"
strip "$WORK/guest/ferrofab-agent"
LOG=$WORK/console.log
"$HERE/run-guest.sh" --script "$HERE/kdriver-guest.sh" --log "$LOG" --quiet \
    --timeout "$TIMEOUT" --mem 1536 \
    --bin "$WORK/guest/ferrofab-agent" \
    --file "$WORK/guest/agent.toml:/etc/ferrofab/agent.toml" \
    --file "$WORK/kg/ca.crt:/etc/ferrofab/ca.crt" \
    --file "$WORK/kg/node.crt:/etc/ferrofab/node.crt" \
    --file "$WORK/kg/node.key:/etc/ferrofab/node.key" \
    --env "KG_HOSTNQN=$KG_NQN" --env "KG_HOSTID=$KG_ID" --env CMD_PORT=5555 \
    --hostfwd "tcp:127.0.0.1:$KPORT-:$KPORT" --hostfwd "tcp:127.0.0.1:$CMDPORT-:5555" \
    "${GUEST_ARGS[@]}" >"$WORK/runner.out" 2>&1 &
GPID=$!
PIDS+=("$GPID")

dump() {
    say "---- guest agent log (tail)"
    g 'tail -n 60 /tmp/agent.log' || true
    for f in controller hs hw; do
        say "---- $f log (tail)"
        tail -n 30 "$WORK/$f.log" || true
    done
    say "---- console (tail)"
    tail -n 30 "$LOG" || true
}

# g CMD: runs CMD in the guest; prints its output, returns its exit code.
g() {
    local deadline=$((SECONDS + 60)) out rc
    while :; do
        out=$( (exec 3<>"/dev/tcp/127.0.0.1/$CMDPORT" && printf '%s\n' "$1" >&3 && cat <&3) 2>/dev/null || true)
        if grep -q '^FF-RC=' <<<"$out"; then break; fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "kdriver: guest did not answer '$1'" >&2
            return 99
        fi
        sleep 0.3
    done
    rc=$(sed -n 's/^FF-RC=//p' <<<"$out" | tail -n1)
    sed '/^FF-RC=/d' <<<"$out"
    return "$rc"
}
# check NAME CMD: a guest command that must succeed.
check() {
    local out
    if out=$(g "$2" 2>&1); then pass "$1"; else fail "$1: $out"; fi
}
# wait_host SEC DESC CONDITION: polls a host-side bash condition.
wait_host() {
    local sec=$1 desc=$2 cond=$3 deadline=$((SECONDS + $1))
    until eval "$cond"; do
        if [ "$SECONDS" -ge "$deadline" ]; then fail "$desc (not within ${sec}s)"; return 1; fi
        sleep 0.3
    done
    pass "$desc"
}

if ! ff_wait_for_log "$LOG" '^FERROFAB-GUEST-READY' 300 "$GPID"; then
    tail -n 40 "$LOG" "$WORK/runner.out" >&2 || true
    exit 1
fi
T0=$SECONDS

# finish: stops the guest and prints the summary; the exit status.
finish() {
    [ "$FAILED" -eq 0 ] || dump
    g quit >/dev/null || true
    if wait "$GPID"; then rc=0; else rc=$?; fi

    if [ "$rc" -ne 0 ]; then
        fail "guest exited with $rc"
        # The work directory goes away with this script: show the harness's
        # verdict and the console's last lines here, where CI keeps them.
        tail -n 60 "$WORK/runner.out" "$LOG" >&2 || true
    fi
    say "scenarios took $((SECONDS - T0)) s after boot"
    echo "kdriver: $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}

if [ "$AUTH" = 2 ]; then
    # shellcheck source=/dev/null
    . "$HERE/kdriver-auth.sh"
    finish
    exit
fi

# All three attachments at once; apply --wait returns when they are Ready.
write_layout 64MiB vk-hw vh-kg vk2-kg >"$LAYOUT"
if ff apply -f "$LAYOUT" --yes --wait --timeout 300s >"$WORK/apply.out" 2>&1; then
    pass "layout applied: vk, vh, vk2 attached and Ready ($((SECONDS - T0)) s)"
else
    fail "apply --wait: $(tail -n 5 "$WORK/apply.out")"
    dump
    exit 1
fi

if [ "$AUTH" = 1 ]; then
    # shellcheck source=/dev/null
    . "$HERE/kdriver-auth.sh"
    finish
    exit
fi

# 1. storage guest (nvmet) -> host workstation (builtin initiator)
VK=$WORK/hw/volumes/vk
dd if=/dev/urandom of="$WORK/pat1" bs=1M count=4 status=none
MD1=$(md5sum <"$WORK/pat1" | cut -d' ' -f1)
if dd if="$WORK/pat1" of="$VK" bs=1M seek=1 conv=notrunc,fsync status=none \
    && [ "$(dd if="$VK" bs=1M skip=1 count=4 status=none | md5sum | cut -d' ' -f1)" = "$MD1" ]; then
    pass "host wrote and read back 4 MiB on vk (guest nvmet)"
else
    fail "host I/O on vk"
fi
check "guest backing file of vk holds the host's pattern" \
    "for f in /tmp/kpool/*; do case \$f in *.ferrofab-owner) continue;; esac; dd if=\$f bs=1M skip=1 count=4 2>/dev/null | md5sum; done | grep -q $MD1"
check "nvmet subsystems carry the ownership marker and allow only hw" \
    "grep -l ferrofab /sys/kernel/config/nvmet/subsystems/*/attr_model | wc -l | grep -qx 2 && ls /sys/kernel/config/nvmet/subsystems/*/allowed_hosts/ | grep -q $HW_NQN && grep -h . /sys/kernel/config/nvmet/subsystems/*/attr_allow_any_host | sort | uniq -c | grep -q '2 0'"

write_layout 96MiB vk-hw vh-kg vk2-kg >"$LAYOUT"
ff apply -f "$LAYOUT" --yes >/dev/null 2>&1
wait_host 90 "grow: vk is 96 MiB on the host (revalidate_size -> AEN)" \
    '[ "$(stat -c %s "$VK" 2>/dev/null)" = $((96 << 20)) ]' || true

ff attachment delete vk-hw >/dev/null
write_layout 96MiB vh-kg vk2-kg >"$LAYOUT"
wait_host 60 "revoke: vk's file is gone on the host" '[ ! -e "$VK" ]' || true
check "revoke: hw is no longer in any allowed_hosts, the port links were bounced" \
    "ff-wait 30 '! ls /sys/kernel/config/nvmet/subsystems/*/allowed_hosts/ | grep -q $HW_NQN' && grep -q 'host revoked' /tmp/agent.log"

# 2. host storage (builtin target) -> workstation guest (kernel host)
VH=/run/ferrofab/volumes/vh
check "guest sees vh as a symlink to /dev/nvmeXnY" \
    "ff-wait 30 '[ -b $VH ]' && readlink $VH | grep -qE '^/dev/nvme[0-9]+n1\$'"
MD2=$(g "dd if=/dev/urandom of=/tmp/pat2 bs=1M count=4 2>/dev/null && dd if=/tmp/pat2 of=$VH bs=1M conv=fsync 2>/dev/null && md5sum </tmp/pat2 | cut -d' ' -f1" || true)
HFILE=$(find "$WORK/hpool" -type f ! -name '*.ferrofab-owner' | head -n1)
if [ -n "$MD2" ] && [ -n "$HFILE" ] \
    && [ "$(dd if="$HFILE" bs=1M count=4 status=none | md5sum | cut -d' ' -f1)" = "$MD2" ]; then
    pass "host finds the guest's pattern in vh's backing file"
else
    fail "vh data: guest md5 '$MD2', file '$HFILE'"
fi
DEV2=$(g "readlink $VH" || true)
N2=$(g 'ls /sys/class/nvme | wc -l' || true)
ff attachment delete vh-kg >/dev/null
write_layout 96MiB vk2-kg >"$LAYOUT"
check "detach: vh's symlink, block device and controller are gone" \
    "ff-wait 60 '[ ! -e $VH ] && [ ! -e $DEV2 ] && [ \$(ls /sys/class/nvme | wc -l) -eq $((N2 - 1)) ]'"

# 3. both sides kernel
VK2=/run/ferrofab/volumes/vk2
check "both kernel: vk2 written and read back through nvme-tcp, found in nvmet's file" \
    "ff-wait 30 '[ -b $VK2 ]' && dd if=/dev/urandom of=/tmp/pat3 bs=1M count=4 2>/dev/null && dd if=/tmp/pat3 of=$VK2 bs=1M conv=fsync 2>/dev/null && echo 3 >/proc/sys/vm/drop_caches && m=\$(md5sum </tmp/pat3 | cut -d' ' -f1) && [ \"\$(dd if=$VK2 bs=1M count=4 2>/dev/null | md5sum | cut -d' ' -f1)\" = \"\$m\" ] && for f in /tmp/kpool/*; do case \$f in *.ferrofab-owner) continue;; esac; dd if=\$f bs=1M count=4 2>/dev/null | md5sum; done | grep -q \$m"

# 4. adoption: restart the guest agent under a read loop
check "reader started on vk2" \
    "rm -f /tmp/readerr /tmp/stopread; echo 0 >/tmp/reads; (n=0; while [ ! -f /tmp/stopread ]; do dd if=$VK2 of=/dev/null bs=64k count=128 2>/dev/null || echo \$n >>/tmp/readerr; n=\$((n + 1)); echo \$n >/tmp/reads; done) >/dev/null 2>&1 </dev/null & sleep 1; [ \$(cat /tmp/reads) -gt 0 ]"
DEV3=$(g "readlink $VK2" || true)
check "guest agent restarted and adopted its objects" \
    "ff-agent-stop && sleep 2 && ff-agent-start && ff-wait 60 '[ \$(grep -c \"kernel host: adopted\" /tmp/agent.log) -ge 2 ] && [ \$(grep -c \"kernel target: adopted\" /tmp/agent.log) -ge 2 ]'"
# Let several passes run (resync 5 s) against the adopted objects.
sleep 12
check "no read error across the restart, same device, reads went on" \
    "r1=\$(cat /tmp/reads); sleep 2; [ \$(cat /tmp/reads) -gt \$r1 ] && [ ! -s /tmp/readerr ] && [ \"\$(readlink $VK2)\" = '$DEV3' ]"
wait_host 60 "attachment vk2-kg Ready after the restart" \
    "ff wait attachment/vk2-kg --timeout 5s >/dev/null 2>&1" || true
g 'touch /tmp/stopread' >/dev/null || true
ff attachment delete vk2-kg >/dev/null
check "detach vk2: symlink and block device gone" \
    "ff-wait 60 '[ ! -e $VK2 ] && [ ! -e $DEV3 ]'"
FNQN=nqn.2026-11.org.admin:foreign
check "the foreign nvmet subsystem survived every reconcile untouched" \
    "s=/sys/kernel/config/nvmet/subsystems/$FNQN; [ \$(cat \$s/attr_allow_any_host) = 1 ] && [ \$(cat \$s/namespaces/1/enable) = 1 ] && [ \$(cat \$s/namespaces/1/device_path) = /tmp/admin/foreign.img ] && ! grep -q ferrofab \$s/attr_model && ! grep -q $FNQN /var/lib/ferrofab/agent/kernel-target.json"
check "guest agent logged no panic" "! grep -q panicked /tmp/agent.log"
finish
