#!/usr/bin/env bash
# tests/kernel/run-guest.sh - run a test script inside a Linux 6.1 qemu guest.
#
# Usage:
#   run-guest.sh --script FILE [options] [-- SCRIPT-ARGS...]
#   run-guest.sh --shell [options]             (interactive busybox shell;
#                                               `exit N` powers off, status N)
#
# Options:
#   --script FILE        guest test script, run as /ferrofab/test.sh by busybox
#                        (no bash in the guest unless you --bin it)
#   --bin SRC[:DEST]     host binary to copy in (default DEST /usr/local/bin/NAME,
#                        on the guest PATH); its shared libraries come along
#   --file SRC:DEST      host file or directory to copy in as is
#   --env KEY=VALUE      exported to the guest script (repeatable)
#   --hostfwd RULE       qemu user-net forward, e.g. tcp:127.0.0.1:14420-:4420
#                        (host 127.0.0.1:14420 -> guest :4420); an empty host
#                        address becomes 127.0.0.1
#   --mem MB             guest memory (default 1024)
#   --smp N              guest vCPUs (default 2)
#   --timeout SEC        wall-clock limit for qemu (boot + test), counted from
#                        qemu's start (default 300)
#   --log FILE           console log (default tests/.work/kernel/<script>-<time>.log);
#                        the full kernel log (all levels) goes to FILE.kmsg
#   --module M           add kernel module M (+deps) to the initramfs and load it
#   --load M             also load module M (already in the initramfs: loop,
#                        null_blk, ext4, crc32c-intel, ...) at boot; always
#                        loaded: virtio_pci virtio_net virtio_console configfs
#                        crc32c_generic nvme-tcp nvmet-tcp (+ dependencies)
#   --append ARGS        extra kernel command line
#   --quiet              do not echo the console to stdout
#   --keep               keep the per-run work directory (initrd) for debugging
#   --no-kmsg            do not capture the full kernel log into FILE.kmsg
#
# Environment: FERROFAB_TEST_CACHE (cache root), FF_KERNEL_IMAGE=auto|vmlinux|
# bzimage (default auto: the decompressed vmlinux when setup.sh made one),
# FF_INITRD_COMPRESS=gzip|none (initramfs base compression, default gzip).
#
# The guest is 10.0.2.15/24 on qemu user networking; the host's loopback is
# 10.0.2.2 from inside. Guest scripts may source /usr/lib/ferrofab/ff-lib.sh.
#
# Exit status: the guest script's exit code, read from the
# "FERROFAB-GUEST-EXIT=<code>" line of the console, or
#   124  timeout (qemu killed)
#   125  harness failure (setup, initramfs, qemu, guest /init, or no exit line)
# The last stdout line is "run-guest.sh: result exit=N boot=S total=S log=FILE".
set -euo pipefail
# depmod, modprobe, nvme, mke2fs live in sbin, which a non-root PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin;; esac
shopt -s inherit_errexit

FF_KERNEL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FF_REPO=$(cd "$FF_KERNEL_DIR/../.." && pwd)
FF_CACHE=${FERROFAB_TEST_CACHE:-$FF_REPO/tests/.cache}
KCACHE=$FF_CACHE/kernel

E_TIMEOUT=124
E_HARNESS=125

die() { printf 'run-guest.sh: error: %s\n' "$*" >&2; exit "$E_HARNESS"; }
say() { printf 'run-guest.sh: %s\n' "$*" >&2; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
secs() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }
# The exit code from the last line that is exactly FERROFAB-GUEST-EXIT=<n>.
exit_code_of() { { grep -a -E '^FERROFAB-GUEST-EXIT=[0-9]{1,3}$' || true; } | tail -n1 | cut -d= -f2; }

SCRIPT=""
SHELL_MODE=0
MEM=1024
SMP=2
TIMEOUT=300
LOG=""
QUIET=0
KEEP=0
KMSG=1
APPEND=""
HOSTFWDS=()
BUILD_ARGS=()
SCRIPT_ARGS=()

while [ $# -gt 0 ]; do
    case "$1" in
        --script) SCRIPT=${2:?--script needs a value}; shift 2;;
        --shell) SHELL_MODE=1; shift;;
        --bin|--file|--env|--module|--load) BUILD_ARGS+=("$1" "${2:?$1 needs a value}"); shift 2;;
        --hostfwd) HOSTFWDS+=("${2:?--hostfwd needs a value}"); shift 2;;
        --mem) MEM=${2:?--mem needs a value}; shift 2;;
        --smp) SMP=${2:?--smp needs a value}; shift 2;;
        --timeout) TIMEOUT=${2:?--timeout needs a value}; shift 2;;
        --log) LOG=${2:?--log needs a value}; shift 2;;
        --append) APPEND=${2:?--append needs a value}; shift 2;;
        --quiet) QUIET=1; shift;;
        --keep) KEEP=1; shift;;
        --no-kmsg) KMSG=0; shift;;
        --) shift; SCRIPT_ARGS=("$@"); break;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0;;
        *) die "unknown argument '$1' (see --help)";;
    esac
done
[ -n "$SCRIPT" ] || [ "$SHELL_MODE" = 1 ] || die "--script FILE is required (or --shell)"
[ -z "$SCRIPT" ] || [ -f "$SCRIPT" ] || die "test script '$SCRIPT' not found"
[[ "$MEM" =~ ^[0-9]+$ ]] && [ "$MEM" -ge 128 ] || die "--mem must be a number of MiB >= 128"
[[ "$SMP" =~ ^[0-9]+$ ]] && [ "$SMP" -ge 1 ] || die "--smp must be a positive number"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] && [ "$TIMEOUT" -ge 1 ] || die "--timeout must be a positive number of seconds"

NETDEV="user,id=n0"
for r in "${HOSTFWDS[@]}"; do
    # PROTO:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT; never listen beyond loopback
    [[ "$r" =~ ^(tcp|udp):([^:]*):([0-9]+)-([^:]*):([0-9]+)$ ]] \
        || die "--hostfwd '$r' is not PROTO:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT"
    haddr=${BASH_REMATCH[2]:-127.0.0.1}
    NETDEV+=",hostfwd=${BASH_REMATCH[1]}:$haddr:${BASH_REMATCH[3]}-${BASH_REMATCH[4]}:${BASH_REMATCH[5]}"
done

T0=$(now_ms)
FF_SETUP_QUIET=1 "$FF_KERNEL_DIR/setup.sh" || die "setup.sh failed"
# shellcheck source=/dev/null
. "$KCACHE/current.env"
# Prefer the decompressed ELF vmlinux (PVH entry, no in-guest decompression).
KERNEL_IMAGE=$FF_VMLINUZ
case "${FF_KERNEL_IMAGE:-auto}" in
    auto|vmlinux) [ -z "${FF_VMLINUX:-}" ] || [ ! -f "$FF_VMLINUX" ] || KERNEL_IMAGE=$FF_VMLINUX;;
    bzimage) ;;
    *) die "FF_KERNEL_IMAGE must be auto, vmlinux or bzimage";;
esac
[ -f "$KERNEL_IMAGE" ] || die "kernel image $KERNEL_IMAGE missing (run setup.sh)"
QEMU=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found (run setup.sh)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ff-guest.XXXXXX")
QPID=""
on_exit() {
    if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
        kill "$QPID" 2>/dev/null || true
        sleep 0.5
        kill -9 "$QPID" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ]; then say "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "$LOG" ]; then
    name=shell
    [ -z "$SCRIPT" ] || name=$(basename "$SCRIPT" .sh)
    LOG=$FF_REPO/tests/.work/kernel/$name-$(date +%Y%m%d-%H%M%S)-$$.log
fi
mkdir -p "$(dirname "$LOG")"
LOG=$(cd "$(dirname "$LOG")" && pwd)/$(basename "$LOG")
KLOG=$LOG.kmsg
: >"$LOG"
: >"$KLOG"

INITRD=$WORK/initrd.img
BARGS=(--out "$INITRD" "${BUILD_ARGS[@]}")
[ "$KMSG" = 0 ] || BARGS+=(--kmsg-port ff.kmsg)
[ -z "$SCRIPT" ] || BARGS+=(--script "$SCRIPT")
[ "$SHELL_MODE" = 0 ] || BARGS+=(--shell)
"$FF_KERNEL_DIR/build-initramfs.sh" "${BARGS[@]}" -- "${SCRIPT_ARGS[@]}" \
    || die "building the initramfs failed"
T_BUILT=$(now_ms)

CMDLINE="console=ttyS0 quiet panic=-1 8250.nr_uarts=1 random.trust_cpu=on printk.devkmsg=on"
[ -z "$APPEND" ] || CMDLINE+=" $APPEND"

# shellcheck disable=SC2054 # commas inside qemu option values
if [ "$SHELL_MODE" = 1 ]; then
    # console and monitor multiplexed on the terminal: Ctrl-a x quits
    CONSOLE=(-chardev stdio,id=con0,mux=on,signal=off -serial chardev:con0 -mon chardev=con0)
else
    CONSOLE=(-chardev stdio,id=con0,signal=off -serial chardev:con0)
fi
KMSG_DEV=()
# shellcheck disable=SC2054
if [ "$KMSG" = 1 ]; then
    KMSG_DEV=(-device virtio-serial-pci,id=vs0 -chardev "file,id=kmsg0,path=$KLOG"
        -device virtserialport,bus=vs0.0,chardev=kmsg0,name=ff.kmsg)
fi
# shellcheck disable=SC2054
QARGS=(
    -accel tcg -cpu max -smp "$SMP" -m "$MEM"
    -nodefaults -no-user-config -display none -no-reboot
    "${CONSOLE[@]}"
    "${KMSG_DEV[@]}"
    -kernel "$KERNEL_IMAGE" -initrd "$INITRD" -append "$CMDLINE"
    -netdev "$NETDEV" -device virtio-net-pci,netdev=n0,romfile=
)

if [ "$SHELL_MODE" = 1 ]; then
    say "interactive guest shell (exit N to power off; Ctrl-a x kills qemu)"
    set +e
    "$QEMU" "${QARGS[@]}" | tee "$LOG"
    set -e
    RC=$(tr -d '\r' <"$LOG" | exit_code_of)
    [ -n "$RC" ] || RC=$E_HARNESS
    exit "$RC"
fi

say "kernel $FF_KVER, initramfs $(du -h "$INITRD" | cut -f1), log $LOG"
FIFO=$WORK/console
mkfifo "$FIFO"
timeout --kill-after=5 "$TIMEOUT" "$QEMU" "${QARGS[@]}" </dev/null >"$FIFO" 2>&1 &
QPID=$!

T_READY=""
while IFS= read -r line || [ -n "$line" ]; do
    line=${line//$'\r'/}
    printf '%s\n' "$line" >>"$LOG"
    [ "$QUIET" = 1 ] || printf 'guest| %s\n' "$line"
    if [ -z "$T_READY" ] && [[ "$line" == *"ff-init: guest ready"* ]]; then
        T_READY=$(now_ms)
    fi
done <"$FIFO"

set +e
wait "$QPID"
QRC=$?
set -e
QPID=""
T_END=$(now_ms)

RC=$(exit_code_of <"$LOG")
BOOT=-
[ -z "$T_READY" ] || BOOT=$(secs $((T_READY - T_BUILT)))
TOTAL=$(secs $((T_END - T0)))

if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then
    say "TIMEOUT: guest did not finish within ${TIMEOUT}s; qemu killed (log: $LOG, kernel log: $KLOG)"
    RC=$E_TIMEOUT
elif [ -z "$RC" ]; then
    say "FAILED: no FERROFAB-GUEST-EXIT line on the console (qemu exit $QRC; kernel panic or /init crash?)"
    say "last console lines:"
    tail -n 20 "$LOG" | sed 's/^/    /' >&2
    say "last kernel log lines ($KLOG):"
    tail -n 20 "$KLOG" | sed 's/^/    /' >&2
    RC=$E_HARNESS
elif [ "$QRC" != 0 ]; then
    say "warning: qemu exited with status $QRC after the guest reported $RC"
fi
if grep -a -q 'FERROFAB-GUEST-INIT-ERROR' "$LOG"; then
    say "guest /init failed: $(grep -a 'FERROFAB-GUEST-INIT-ERROR' "$LOG" | tail -n1)"
fi
printf 'run-guest.sh: result exit=%s boot=%s total=%s log=%s\n' "$RC" "$BOOT" "$TOTAL" "$LOG"
exit "$RC"
