#!/usr/bin/env bash
# filesystem-helper.sh HELPER WORKDIR
#
# Unit tests of puppet/files/ferrofab-filesystem (the helper behind
# ferrofab::filesystem) without an agent: a stand-in agent CLI lists one
# attachment whose "exposed file" is an image in WORKDIR. As root (loop
# devices, mount). Checks: mkfs + mount + owner/mode, check passes, a
# second apply does nothing, never mkfs over another filesystem, a busy
# mount is not unmounted by `remove`, remove keeps the data, remove-all,
# and clear failures when the volume is not attached or the agent is down.
set -euo pipefail
helper=$1 dir=$2
rm -rf "$dir"
mkdir -p "$dir"
fail() {
    echo "filesystem-helper: FAIL: $*" >&2
    exit 1
}

img=$dir/vol-x
truncate -s 32M "$img"
cat >"$dir/agent" <<EOF
#!/bin/sh
# stand-in for ferrofab-agent --config C attachments
[ -e "$dir/agent-down" ] && { echo "error: cannot reach the agent at $dir/agent.sock" >&2; exit 1; }
printf 'vol-x-ws\tvol-x\tlive\t%s\n' "$img"
EOF
chmod +x "$dir/agent"
H=("$helper" --agent "$dir/agent" --agent-config /nonexistent --state-dir "$dir/state")
mnt=$dir/mnt
args=(vol-x --volume vol-x --mountpoint "$mnt" --fstype ext4 --mkfs-options "-L hx" --mount-options "" --owner "" --group nogroup --mode 0750)
cleanup() {
    umount "$mnt" 2>/dev/null || true
    losetup -j "$img" -n -O NAME 2>/dev/null | xargs -r -n1 losetup -d 2>/dev/null || true
}
trap cleanup EXIT

"${H[@]}" check "${args[@]}" >"$dir/out" && fail "check passed before anything was done"
grep -q "not mounted" "$dir/out" || fail "check does not say 'not mounted': $(cat "$dir/out")"

"${H[@]}" apply "${args[@]}" >"$dir/out" || fail "apply failed: $(cat "$dir/out")"
grep -q "mkfs.ext4" "$dir/out" || fail "no mkfs on an empty volume"
[ "$(blkid -o value -s LABEL "$img")" = hx ] || fail "mkfs options not used"
[ "$(stat -c '%G %a' "$mnt")" = "nogroup 750" ] || fail "owner/mode: $(stat -c '%G %a' "$mnt")"
"${H[@]}" check "${args[@]}" || fail "check fails after apply"
echo data >"$mnt/file"
sync
"${H[@]}" apply "${args[@]}" >"$dir/out" || fail "second apply failed"
[ -s "$dir/out" ] && fail "second apply did something: $(cat "$dir/out")"

chmod 0700 "$mnt"
"${H[@]}" check "${args[@]}" >"$dir/out" && fail "check passed with the wrong mode"
"${H[@]}" apply "${args[@]}" >"$dir/out" || fail "apply of the mode failed"
grep -q "fixed mode" "$dir/out" || fail "mode not fixed: $(cat "$dir/out")"

# Remounted read-only (as ext4 does after I/O errors): repaired.
mount -o remount,ro "$mnt"
"${H[@]}" check "${args[@]}" >"$dir/out" && fail "check passed on a read-only remount"
grep -q "^dead: mounted read-only" "$dir/out" || fail "unclear: $(cat "$dir/out")"
"${H[@]}" apply "${args[@]}" >"$dir/out" || fail "repair of a read-only mount failed: $(cat "$dir/out")"
grep -q "repairing: dead: mounted read-only" "$dir/out" || fail "no repair: $(cat "$dir/out")"
"${H[@]}" check "${args[@]}" || fail "check fails after the repair"
[ "$(cat "$mnt/file")" = data ] || fail "data lost in the repair"

# Declared as xfs while an ext4 is mounted: a failure, and it stays mounted.
"${H[@]}" apply vol-x --volume vol-x --mountpoint "$mnt" --fstype xfs >"$dir/out" 2>&1 && fail "apply with another fstype succeeded"
grep -q "mounted as ext4, wanted xfs" "$dir/out" || fail "unclear: $(cat "$dir/out")"
findmnt "$mnt" >/dev/null || fail "a healthy mount of another type was unmounted"

# A busy mount: `remove` fails and leaves it mounted.
exec 9<"$mnt/file"
"${H[@]}" remove "${args[@]}" >"$dir/out" 2>&1 && fail "remove of a busy mount succeeded"
findmnt "$mnt" >/dev/null || fail "a busy mount was unmounted"
exec 9<&-

"${H[@]}" absent "${args[@]}" >/dev/null && fail "absent passed while mounted"
"${H[@]}" remove "${args[@]}" >"$dir/out" || fail "remove failed: $(cat "$dir/out")"
findmnt "$mnt" >/dev/null && fail "still mounted after remove"
[ -z "$(losetup -j "$img" -n -O NAME)" ] || fail "loop device left after remove"
"${H[@]}" absent "${args[@]}" || fail "absent fails after remove"

# Mounted again: the data is there, no mkfs.
"${H[@]}" apply "${args[@]}" >"$dir/out" || fail "apply after remove failed"
grep -q "mkfs" "$dir/out" && fail "mkfs over an existing filesystem"
[ "$(cat "$mnt/file")" = data ] || fail "data lost"
"${H[@]}" remove-all >"$dir/out" || fail "remove-all failed"
findmnt "$mnt" >/dev/null && fail "still mounted after remove-all"
[ -z "$(ls -A "$dir/state")" ] || fail "state left after remove-all"

# Another filesystem on the volume: never formatted over.
mkfs.ext2 -q -L other "$img"
"${H[@]}" apply "${args[@]}" >"$dir/out" 2>&1 && fail "apply over an ext2 volume succeeded"
grep -q "already holds ext2" "$dir/out" || fail "no clear refusal: $(cat "$dir/out")"
[ "$(blkid -o value -s LABEL "$img")" = other ] || fail "the ext2 filesystem was overwritten"
cleanup

# Not attached, agent down: clear failures.
"${H[@]}" apply vol-y --volume vol-y --mountpoint "$mnt" >"$dir/out" 2>&1 && fail "apply of an unattached volume succeeded"
grep -q "volume vol-y is not attached" "$dir/out" || fail "unclear: $(cat "$dir/out")"
touch "$dir/agent-down"
"${H[@]}" check "${args[@]}" >"$dir/out" 2>&1 && fail "check passed with the agent down"
grep -q "the agent does not answer" "$dir/out" || fail "unclear: $(cat "$dir/out")"
echo "filesystem-helper: all checks passed"
