# shellcheck shell=bash
# tests/kernel/kdriver-auth.sh - the DH-HMAC-CHAP scenarios of
# `kdriver.sh --auth` (and --auth-unsupported, at the top), sourced by it once the guest (Linux 6.12, agent `kg`
# with the kernel driver for both roles) and the host's agents `hs`
# (built-in target) and `hw` (built-in initiator) have vk-hw, vh-kg and
# vk2-kg attached under a controller with `[auth] require = true`. Every
# key comes from that controller; none is written by hand.
#
#   A. keys in place: nvmet's host entries for kg and hw hold their keys
#      (hmac(sha256), ffdhe2048); kg's two kernel controllers carry kg's key,
#      with a controller key towards hs's built-in target (bidirectional)
#      and none towards nvmet (which keeps one per host: unidirectional);
#      their sysfs secret attributes are made readable by root only;
#   B. I/O over each authenticated path: mkfs.ext4/fsck/read-back on vk2
#      (Linux host -> nvmet), a pattern on vh (Linux host -> built-in
#      target) found in hs's backing file, and on vk from hw (built-in
#      initiator -> nvmet);
#   C. rotation under writes: `ferrofab node rotate-key kg` and `... hw`
#      while the guest writes files with fsync on vk2: nvmet gets the new
#      keys, both kernel controllers re-authenticate in place (same
#      controllers), hw re-authenticates; no write error, all read back;
#   D. refusals: kg's host NQN without a key, or with a wrong one, is
#      refused by nvmet (the right key is accepted with the same options);
#      ws0, a workstation that never reported (so it has no key), allowed
#      on volume vr, gets a key nobody holds and is refused at connect.
# Uses kdriver.sh's helpers and variables (g, check, wait_host, ff, ...).

N=/sys/kernel/config/nvmet

# --auth-unsupported (Linux 6.1, nothing attached yet): kg's exports
# (vk2) cannot enforce authentication and are not served; kg as a host
# (vh-kg, on hs's built-in target, which can) cannot authenticate. Both
# say why, and nothing is let in or connected.
if [ "$AUTH" = 2 ]; then
    write_layout 64MiB vh-kg >"$LAYOUT"
    ff apply -f "$LAYOUT" --yes >/dev/null 2>&1 || fail "apply vh-kg"
    wait_host 90 "Linux 6.1 nvmet: vk2's export reports AuthUnsupported" \
        "ff describe volume vk2 2>/dev/null | grep -q AuthUnsupported" || true
    # The controller shows a connection's conditions once it connected
    # (ops/status.rs), so the agent's own report is read here.
    check "Linux 6.1 host: attachment vh-kg reports AuthUnsupported naming CONFIG_NVME_HOST_AUTH" \
        "ff-wait 60 'grep CONFIG_NVME_HOST_AUTH /tmp/agent.log | grep -q AuthUnsupported'"
    check "kg's exports name CONFIG_NVME_TARGET_AUTH; no host is let in, nothing is connected" \
        "grep CONFIG_NVME_TARGET_AUTH /tmp/agent.log | grep -q AuthUnsupported && for d in $N/subsystems/*/allowed_hosts; do [ -z \"\$(ls \$d)\" ] || exit 1; done && [ -z \"\$(ls /sys/class/nvme/)\" ]"
    return
fi
VK=$WORK/hw/volumes/vk
VH=/run/ferrofab/volumes/vh
VK2=/run/ferrofab/volumes/vk2
# ctrl_to PORT: the guest's controller connected to that port.
ctrl_to() { g "grep -l 'trsvcid=$1' /sys/class/nvme/nvme*/address | head -n1 | xargs dirname"; }
C_NVMET=$(ctrl_to "$KPORT" || true)
C_HS=$(ctrl_to "$HSPORT" || true)
say "kernel controllers: to nvmet $C_NVMET, to hs $C_HS"
# The secrets are compared in the guest, never printed.
same_key="[ \"\$(cat $C_NVMET/dhchap_secret)\" = \"\$(cat $N/hosts/$KG_NQN/dhchap_key)\" ] && [ \"\$(cat $C_HS/dhchap_secret)\" = \"\$(cat $N/hosts/$KG_NQN/dhchap_key)\" ]"

# A. keys in place
check "nvmet holds kg's and hw's keys from the controller (hmac(sha256), ffdhe2048)" \
    "for h in $KG_NQN $HW_NQN; do grep -q '^DHHC-1:' $N/hosts/\$h/dhchap_key && grep -qx 'hmac(sha256)' $N/hosts/\$h/dhchap_hash && grep -qx ffdhe2048 $N/hosts/\$h/dhchap_dhgroup || exit 1; done"
check "kg's kernel controllers use kg's key: bidirectional towards hs, unidirectional towards nvmet" \
    "$same_key && grep -q '^DHHC-1:' $C_HS/dhchap_ctrl_secret && grep -qx none $C_NVMET/dhchap_ctrl_secret"

check "the secret attributes of the kernel controllers and nvmet's host entries are readable by root only (Linux makes them 0644)" \
    "for a in $C_NVMET/dhchap_secret $C_HS/dhchap_secret $C_HS/dhchap_ctrl_secret $N/hosts/$KG_NQN/dhchap_key $N/hosts/$HW_NQN/dhchap_key; do [ \$(stat -c %a \$a) = 600 ] || exit 1; done"

# B. I/O over the authenticated paths
check "Linux host -> nvmet (vk2): mkfs.ext4, 4 MiB file, fsck, read back after remount" \
    "dd if=/dev/urandom of=/tmp/p4 bs=1M count=4 2>/dev/null && head -c 1048576 /tmp/p4 >/tmp/p1 && mkfs.ext4 -q -F $VK2 && mkdir -p /mnt/a && mount -t ext4 $VK2 /mnt/a && cp /tmp/p4 /mnt/a/f0 && sync && umount /mnt/a && e2fsck -fn $VK2 >/dev/null && mount -t ext4 $VK2 /mnt/a && echo 3 >/proc/sys/vm/drop_caches && cmp /tmp/p4 /mnt/a/f0"
MD2=$(g "dd if=/tmp/p4 of=$VH bs=1M conv=fsync 2>/dev/null && md5sum </tmp/p4 | cut -d' ' -f1" || true)
HFILE=$(find "$WORK/hpool" -type f ! -name '*.ferrofab-owner' | head -n1)
if [ -n "$MD2" ] && [ "$(dd if="$HFILE" bs=1M count=4 status=none | md5sum | cut -d' ' -f1)" = "$MD2" ]; then
    pass "Linux host -> built-in target (vh): the guest's 4 MiB found in hs's backing file"
else
    fail "vh data: guest md5 '$MD2', file '$HFILE'"
fi
host_io() { # WHAT: 4 MiB written and read back on vk from hw
    dd if=/dev/urandom of="$WORK/pat" bs=1M count=4 status=none
    if dd if="$WORK/pat" of="$VK" bs=1M conv=notrunc,fsync status=none \
        && cmp -s "$WORK/pat" <(dd if="$VK" bs=1M count=4 status=none); then
        pass "built-in initiator -> nvmet (vk from hw): 4 MiB written and read back $1"
    else
        fail "built-in initiator -> nvmet (vk from hw) $1"
    fi
}
host_io "with hw's key"

# C. rotation under a stream of writes
KG_OLD=$(g "md5sum <$N/hosts/$KG_NQN/dhchap_key" || true)
HW_OLD=$(g "md5sum <$N/hosts/$HW_NQN/dhchap_key" || true)
DEVS=$(g "echo \$(readlink $VK2) \$(readlink $VH)" || true)
MARK=$(g 'dmesg | wc -l' || true)
check "writer started on vk2's filesystem" \
    "rm -f /tmp/werr /tmp/wdone; (i=1; while [ \$i -le 16 ]; do dd if=/tmp/p1 of=/mnt/a/r\$i bs=64k conv=fsync 2>/dev/null || echo \$i >>/tmp/werr; sleep 0.5; i=\$((i + 1)); done; touch /tmp/wdone) >/dev/null 2>&1 </dev/null &"
T_ROT=$SECONDS
if ff node rotate-key kg >"$WORK/rotate.out" 2>&1 && ff node rotate-key hw >>"$WORK/rotate.out" 2>&1; then
    pass "ferrofab node rotate-key kg, hw: $(tr '\n' ' ' <"$WORK/rotate.out")"
else
    fail "rotate-key: $(cat "$WORK/rotate.out")"
fi
check "rotation: nvmet holds kg's new key, both kernel controllers re-authenticated with it" \
    "ff-wait 90 '[ \"\$(md5sum <$N/hosts/$KG_NQN/dhchap_key)\" != \"$KG_OLD\" ] && $same_key' && dmesg | tail -n +$MARK | grep -q 're-authenticating controller'"
say "kg's controllers followed the rotation $((SECONDS - T_ROT)) s after it"
check "writes during the rotation: no error, every file read back, fsck clean" \
    "ff-wait 120 '[ -f /tmp/wdone ]' && [ ! -s /tmp/werr ] && echo 3 >/proc/sys/vm/drop_caches && for i in \$(seq 1 16); do cmp /tmp/p1 /mnt/a/r\$i || exit 1; done && umount /mnt/a && e2fsck -fn $VK2 >/dev/null"
check "no reconnect: same devices, both controllers live, each connected once" \
    "[ \"\$(readlink $VK2) \$(readlink $VH)\" = \"$DEVS\" ] && grep -qx live $C_NVMET/state && grep -qx live $C_HS/state && [ \$(grep -c 'connected controller=' /tmp/agent.log) -eq 2 ]"
check "no authentication failure in the kernel log since the rotation" \
    "! dmesg | tail -n +$MARK | grep -i 'nvme' | grep -qi 'fail'"
wait_host 90 "hw re-authenticated its live connection with its rotated key" \
    "[ \"\$(g 'md5sum <$N/hosts/$HW_NQN/dhchap_key')\" != '$HW_OLD' ] && cat '$WORK/hw.log' '$WORK/hw/state/holder.log' 2>/dev/null | grep -q 're-authenticated with the rotated key'" || true
host_io "after the rotation"

# D. refusals
NQN2=$(g "cat $C_NVMET/subsysnqn" || true)
BASE="transport=tcp,traddr=127.0.0.1,trsvcid=$KPORT,nqn=$NQN2,hostnqn=$KG_NQN,hostid=$KG_ID,duplicate_connect"
# try OPTS: one connect through /dev/nvme-fabrics; prints the answer.
try="try() { { printf '%s' \"\$1\" >&3 && cat <&3; } 3<>/dev/nvme-fabrics; }"
check "kg's host NQN without its key is refused by nvmet" "$try; ! try '$BASE'"
check "kg's host NQN with a wrong key is refused by nvmet" \
    "$try; ! try \"$BASE,dhchap_secret=\$(nvme gen-dhchap-key -n $KG_NQN | tr -d '\\n')\""
check "the same options with kg's key connect (control)" \
    "$try; c=\$(try \"$BASE,dhchap_secret=\$(cat $N/hosts/$KG_NQN/dhchap_key)\" | sed -n 's/.*instance=\\([0-9]*\\).*/nvme\\1/p') && [ -n \"\$c\" ] && echo 1 >/sys/class/nvme/\$c/delete_controller"
WITH_WS0=1
write_layout 64MiB vk-hw vh-kg vk2-kg vr-ws0 >"$LAYOUT"
ff apply -f "$LAYOUT" --yes >/dev/null 2>&1 || fail "apply with vr-ws0"
check "ws0 (no key) allowed on vr: nvmet's host entry gets a key nobody holds" \
    "ff-wait 90 'ls $N/subsystems/*/allowed_hosts/ | grep -q $WS0_NQN && grep -q ^DHHC-1: $N/hosts/$WS0_NQN/dhchap_key'"
NQN3=$(g "for s in $N/subsystems/*; do [ -e \$s/allowed_hosts/$WS0_NQN ] && basename \$s; done" || true)
check "ws0's host NQN is refused at connect" \
    "$try; ! try 'transport=tcp,traddr=127.0.0.1,trsvcid=$KPORT,nqn=$NQN3,hostnqn=$WS0_NQN,hostid=$WS0_ID'"
g "dmesg | tail -n +$MARK | grep -i 'auth' | tail -n 12" | sed 's/^/kdriver: guest kernel: /' || true
# 4 keys (kg and hw, 2 generations each); a key nvmet did not show back
# as written would be written again on every pass.
check "guest agent wrote each key once, logged no secret and no panic" \
    "[ \$(grep -c 'host key applied' /tmp/agent.log) -le 6 ] && ! grep -q 'DHHC-1' /tmp/agent.log && ! grep -q panicked /tmp/agent.log"
for f in controller hs hw; do
    if grep -q 'DHHC-1' "$WORK/$f.log"; then fail "$f.log contains a secret"; fi
done
