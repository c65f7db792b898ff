#!/usr/bin/env bash
# tests/kernel/auth.sh - NVMe in-band authentication (DH-HMAC-CHAP) against
# Linux 6.12 under qemu (the 6.1 kernel of the other kernel tests has no
# NVMe authentication).
#
# Usage: auth.sh [--part target|initiator|all] [NVMEOF_BIN [AUTH_INTEROP_BIN]]
#
# Part `target`: the Linux host (`/dev/nvme-fabrics` with dhchap_secret and
# dhchap_ctrl_secret) against `ferrofab-nvmeof serve` on the host, one
# subsystem per case so that every hash (SHA-256/384/512) and every DH
# group (null, ffdhe2048..8192) is used once, two of them bidirectional;
# 1 MiB written and read back per case, mkfs/fsck on one, re-authentication
# of a live controller on one; a wrong host secret, no secret (the subsystem
# requires authentication) and a wrong controller secret are refused.
# Part `initiator`: ferrofab's initiator (examples/auth_interop) against
# Linux nvmet with keys in configfs (dhchap_key, dhchap_ctrl_key,
# dhchap_hash, dhchap_dhgroup), one host NQN per case, the same matrix;
# a wrong secret and a wrong controller secret are refused.
#
# Secrets are generated with nvme-cli (`nvme gen-dhchap-key`), an
# implementation independent of ours. The 6.12 kernel is kept in its own
# cache (tests/.cache/k612) so it never evicts the 6.1 kernel.
# Binaries default to the debug builds in target/ (built if missing).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/lib.sh"
PART=all
if [ "${1:-}" = --part ]; then PART=${2:?}; shift 2; fi
case "${1:-}" in -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0;; esac
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
NVMEOF=${1:-$TARGET_DIR/debug/ferrofab-nvmeof}
DRIVER=${2:-$TARGET_DIR/debug/examples/auth_interop}
if [ ! -x "$NVMEOF" ] || [ ! -x "$DRIVER" ]; then
    (cd "$REPO" && cargo build -q -p ferrofab-nvmeof --bin ferrofab-nvmeof --example auth_interop)
fi

ff_use_kernel_612 || exit 1
FF_SETUP_QUIET=1 "$HERE/setup.sh"

WORK=$REPO/tests/.work/kernel-auth
rm -rf "$WORK"; mkdir -p "$WORK"
HOSTID=3c5e7a90-1b2d-4e6f-8a9b-0c1d2e3f4a5b
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:$HOSTID
PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "auth: PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "auth: FAIL: $*" >&2; }

# gen HMAC LEN NQN: a fresh DHHC-1 secret from nvme-cli.
gen() { nvme gen-dhchap-key -m "$1" -l "$2" -n "$3" | tr -d '\n'; }

# The matrix: hash dhgroup key-hmac key-len ctrl-key(0/1)
CASES=(
    "sha256 null      0 32 0"
    "sha384 ffdhe2048 2 48 0"
    "sha512 ffdhe3072 0 64 1"
    "sha256 ffdhe4096 1 32 0"
    "sha384 ffdhe6144 0 48 0"
    "sha512 ffdhe8192 3 64 1"
)
BIDI_CASE=6 FS_CASE=2 REAUTH_CASE=1

part_target() {
    local io_port cfg env=() i hash grp km kl ck nqn key ckey
    io_port=$(ff_free_port)
    cfg=$WORK/target.toml
    head -c $((1 << 20)) /dev/urandom >"$WORK/pat"
    printf '[[listener]]\naddress = "127.0.0.1:%s"\n' "$io_port" >"$cfg"
    for i in "${!CASES[@]}"; do
        n=$((i + 1))
        read -r hash grp km kl ck <<<"${CASES[$i]}"
        nqn=nqn.2026-12.io.ferrofab:auth-$n
        key=$(gen "$km" "$kl" "$HOSTNQN")
        ckey=""
        [ "$ck" = 1 ] && ckey=$(gen 0 "$kl" "$nqn")
        printf '%s' "$key" >"$WORK/host$n.key"; chmod 600 "$WORK/host$n.key"
        cat >>"$cfg" <<CFG
[[subsystem]]
nqn = "$nqn"
allowed_hosts = ["$HOSTNQN"]
require_auth = true
[[subsystem.host_key]]
host = "$HOSTNQN"
key_file = "$WORK/host$n.key"
$([ -n "$ckey" ] && echo "ctrl_key = \"$ckey\"")
hash = "$hash"
dhgroup = "$grp"
[[subsystem.namespace]]
nsid = 1
path = "$WORK/ns$n.img"
size = "32MiB"
CFG
        env+=(--env "NQN_$n=$nqn" --env "KEY_$n=$key" --env "CKEY_$n=$ckey"
              --env "WHAT_$n=$hash/$grp/$([ "$ck" = 1 ] && echo bidirectional || echo unidirectional)")
    done
    env+=(--env "CASES=$(seq -s ' ' 1 ${#CASES[@]})" --env "BADKEY=$(gen 0 32 "$HOSTNQN")"
          --env "IO_PORT=$io_port" --env "HOSTNQN=$HOSTNQN" --env "HOSTID=$HOSTID"
          --env "BIDI_CASE=$BIDI_CASE" --env "FS_CASE=$FS_CASE" --env "REAUTH_CASE=$REAUTH_CASE")
    RUST_LOG=info "$NVMEOF" serve --config "$cfg" >"$WORK/serve.out" 2>"$WORK/serve.log" &
    local spid=$!
    for _ in $(seq 1 100); do grep -q ready "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$WORK/serve.out" || { fail "target did not start: $(tail -5 "$WORK/serve.log")"; kill $spid; return; }
    if "$HERE/run-guest.sh" --script "$HERE/auth/target-guest.sh" --file "$WORK/pat:/pat" \
            --module nvme-keyring --timeout 600 --log "$WORK/target-console.log" "${env[@]}"; then
        pass "Linux 6.12 host against the built-in target: ${#CASES[@]} cases (every hash and DH group, 2 bidirectional), mkfs, re-authentication, 3 refusals"
    else
        fail "Linux host against the built-in target; console: $WORK/target-console.log, target log: $WORK/serve.log"
    fi
    kill $spid 2>/dev/null || true; wait $spid 2>/dev/null || true
    local ok fails
    ok=$(grep -c "host authenticated" "$WORK/serve.log" || true)
    fails=$(grep -c "authentication failed" "$WORK/serve.log" || true)
    echo "auth: target log: $ok queue authentications, $fails failures"
    if [ "$ok" -ge $((${#CASES[@]} * 3)) ] && [ "$fails" -ge 2 ]; then
        pass "target log shows every queue authenticated and the refusals"
    else
        fail "target log: $ok authentications, $fails failures"
    fi
}

part_initiator() {
    local gport rport guest=$WORK/nvmet-guest.sh i n hash grp km kl ck nqn=nqn.2026-12.io.ferrofab:nvmet-auth
    gport=$(ff_free_port)
    {
        echo '#!/bin/sh'
        echo '. /usr/lib/ferrofab/ff-lib.sh'
        echo 'set -u'
        echo 'mkdir -p /mnt/ns && mount -t tmpfs -o size=256m tmpfs /mnt/ns || ff_die tmpfs'
        echo 'dd if=/dev/zero of=/mnt/ns/ns1.img bs=1M count=0 seek=64 2>/dev/null'
        echo "S=\$FF_NVMET/subsystems/$nqn"
        echo "mkdir -p \$S && echo 0 >\$S/attr_allow_any_host"
        echo "ff_nvmet_ns $nqn 1 /mnt/ns/ns1.img 1"
    } >"$guest"
    local drv=()
    for i in "${!CASES[@]}"; do
        n=$((i + 1))
        read -r hash grp km kl ck <<<"${CASES[$i]}"
        local host=nqn.2014-08.org.nvmexpress:uuid:3c5e7a90-0000-4000-8000-00000000000$n
        local key ckey=""
        key=$(gen "$km" "$kl" "$host")
        [ "$ck" = 1 ] && ckey=$(gen 0 "$kl" "$nqn")
        {
            echo "H=\$FF_NVMET/hosts/$host; mkdir -p \$H"
            echo "ff__write \$H/dhchap_key '$key'"
            [ -n "$ckey" ] && echo "ff__write \$H/dhchap_ctrl_key '$ckey'"
            echo "ff__write \$H/dhchap_hash 'hmac($hash)'"
            echo "ff__write \$H/dhchap_dhgroup '$grp'"
            echo "ln -s \$H \$S/allowed_hosts/$host || ff_die 'allow $host'"
        } >>"$guest"
        drv+=("$n|$hash/$grp|$host|$key|$ckey")
    done
    {
        echo 'ff_nvmet_port 1 0.0.0.0 4420'
        echo "ff_nvmet_link 1 $nqn"
        echo 'ff_ready'
        echo 'ff_wait_release 5555 900'
        echo 'dmesg | grep -i "nvmet\|auth" | tail -n 40'
        echo 'exit 0'
    } >>"$guest"
    rport=$(ff_free_port)
    "$HERE/run-guest.sh" --script "$guest" --log "$WORK/nvmet-console.log" --quiet --timeout 900 \
        --module nvme-keyring --hostfwd "tcp:127.0.0.1:$gport-:4420" --hostfwd "tcp:127.0.0.1:$rport-:5555" \
        >"$WORK/nvmet-runner.out" 2>&1 &
    local gpid=$!
    if ! ff_wait_for_log "$WORK/nvmet-console.log" '^FERROFAB-GUEST-READY' 300 "$gpid"; then
        fail "nvmet guest did not come up: $(tail -n 20 "$WORK/nvmet-console.log")"
        return
    fi
    local ent what host key ckey out
    for ent in "${drv[@]}"; do
        IFS='|' read -r n what host key ckey <<<"$ent"
        local args=(--addr "127.0.0.1:$gport" --nqn "$nqn" --hostnqn "$host" --secret "$key")
        [ -n "$ckey" ] && args+=(--ctrl-secret "$ckey")
        if out=$("$DRIVER" "${args[@]}" 2>&1); then
            pass "our host vs nvmet, case $n ($what$([ -n "$ckey" ] && echo ", bidirectional")): $(tail -n1 <<<"$out")"
        else
            fail "our host vs nvmet, case $n ($what): $out"
        fi
    done
    IFS='|' read -r n what host key ckey <<<"${drv[0]}"
    if out=$("$DRIVER" --addr "127.0.0.1:$gport" --nqn "$nqn" --hostnqn "$host" --secret "$(gen 0 32 "$host")" --expect-auth-failure 2>&1); then
        pass "nvmet refuses a wrong host secret: $(tail -n1 <<<"$out")"
    else
        fail "wrong host secret against nvmet: $out"
    fi
    IFS='|' read -r n what host key ckey <<<"${drv[$((BIDI_CASE - 1))]}"
    if out=$("$DRIVER" --addr "127.0.0.1:$gport" --nqn "$nqn" --hostnqn "$host" --secret "$key" \
            --ctrl-secret "$(gen 0 64 "$nqn")" --expect-auth-failure 2>&1); then
        pass "our host refuses nvmet with a wrong controller secret: $(tail -n1 <<<"$out")"
    else
        fail "wrong controller secret against nvmet: $out"
    fi
    ff_release_guest "$rport" 60 || fail "could not release the nvmet guest"
    wait "$gpid" || fail "nvmet guest exit $?"
}

case "$PART" in
    target) part_target;;
    initiator) part_initiator;;
    all) part_target; part_initiator;;
    *) echo "auth: --part target|initiator|all" >&2; exit 2;;
esac
echo "auth: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
