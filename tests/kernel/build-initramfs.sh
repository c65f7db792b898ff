#!/usr/bin/env bash
# tests/kernel/build-initramfs.sh - build the initramfs of the qemu test guest.
#
# Usage:
#   build-initramfs.sh --out FILE [--script FILE] [--bin SRC[:DEST]]...
#                      [--file SRC:DEST]... [--env KEY=VALUE]... [--module M]...
#                      [--load M]... [--shell] [--kmsg-port NAME] [-- SCRIPT-ARGS...]
#
# The result is two concatenated cpio archives:
#   * a cached "base" (gzip): busybox-static with its applet links, the kernel
#     modules (nvme-tcp host, nvmet, nvmet-tcp, configfs, virtio, crc32c, ext4,
#     loop, null_blk + dependencies) with their own modules.dep, nvme-cli,
#     mke2fs/e2fsck, their shared libraries, guest/init and guest/ff-lib.sh.
#     It is rebuilt only when one of its inputs changes (key: these scripts,
#     the kernel, the host files copied, the module list);
#   * a small per-run overlay (uncompressed): the test script (/ferrofab/test.sh),
#     its arguments (/ferrofab/args), the --env file (/ferrofab/env), harness
#     settings (/ferrofab/config), --bin binaries with their shared libraries,
#     --file files.
#
# --bin SRC        copies SRC to /usr/local/bin/$(basename SRC); SRC:DEST puts it
#                  at DEST. Shared libraries (ldd) come along.
# --file SRC:DEST  copies a file or directory as is (no library resolution).
# --module M       also puts module M (+deps) into the base and loads it at boot.
# --load M         also loads module M at boot (it must be in the base:
#                  one of BASE_MODULES below, their dependencies, or a --module).
# --kmsg-port NAME stream /dev/kmsg to the virtio-serial port named NAME.
#
# Environment: FERROFAB_TEST_CACHE (cache root, default <repo>/tests/.cache),
#              FF_INITRD_COMPRESS=gzip|none (base compression, default gzip).
# Requires setup.sh to have run (it is run here if current.env is missing).
set -euo pipefail
# depmod, modprobe, nvme, mke2fs live in sbin, which a non-root PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin;; esac
shopt -s inherit_errexit

FF_KERNEL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FF_REPO=$(cd "$FF_KERNEL_DIR/../.." && pwd)
FF_CACHE=${FERROFAB_TEST_CACHE:-$FF_REPO/tests/.cache}
KCACHE=$FF_CACHE/kernel
ICACHE=$KCACHE/initramfs

die() { printf 'build-initramfs.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'build-initramfs.sh: %s\n' "$*" >&2; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

CLEANUP=()
declare -A IN_BASE=()
cleanup() { [ "${#CLEANUP[@]}" -eq 0 ] || rm -rf "${CLEANUP[@]}"; }
trap cleanup EXIT

# Modules placed in the base archive (with dependencies and soft dependencies).
BASE_MODULES=(configfs virtio_pci virtio_net virtio_console crc32c_generic crc32c-intel
    nvme-core nvme-fabrics nvme-tcp nvmet nvmet-tcp loop null_blk ext4)
# Modules /init loads at boot unless told otherwise.
DEFAULT_LOAD=(virtio_pci virtio_net virtio_console configfs crc32c_generic nvme-tcp nvmet-tcp)

OUT=""
SCRIPT=""
SHELL_MODE=0
KMSG_PORT=""
BINS=()
FILES=()
ENVS=()
EXTRA_MODULES=()
LOADS=()
ARGS=()

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=${2:?--out needs a value}; shift 2;;
        --script) SCRIPT=${2:?--script needs a value}; shift 2;;
        --bin) BINS+=("${2:?--bin needs a value}"); shift 2;;
        --file) FILES+=("${2:?--file needs a value}"); shift 2;;
        --env) ENVS+=("${2:?--env needs a value}"); shift 2;;
        --module) EXTRA_MODULES+=("${2:?--module needs a value}"); shift 2;;
        --load) LOADS+=("${2:?--load needs a value}"); shift 2;;
        --shell) SHELL_MODE=1; shift;;
        --kmsg-port) KMSG_PORT=${2:?--kmsg-port needs a value}; shift 2;;
        --) shift; ARGS=("$@"); break;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0;;
        *) die "unknown argument '$1' (see --help)";;
    esac
done
[ -n "$OUT" ] || die "--out FILE is required"
[ -n "$SCRIPT" ] || [ "$SHELL_MODE" = 1 ] || die "--script FILE is required (or --shell)"
[ -z "$SCRIPT" ] || [ -f "$SCRIPT" ] || die "test script '$SCRIPT' not found"

[ -f "$KCACHE/current.env" ] || FF_SETUP_QUIET=1 "$FF_KERNEL_DIR/setup.sh" \
    || die "setup.sh failed"
# shellcheck source=/dev/null
. "$KCACHE/current.env"
[ -d "$FF_KROOT/lib/modules/$FF_KVER" ] || die "kernel modules missing in $FF_KROOT (run setup.sh)"
for c in cpio gzip ldd depmod modprobe sha256sum; do
    command -v "$c" >/dev/null || die "'$c' not found (run tests/kernel/setup.sh as root)"
done

# ---------------------------------------------------------------- helpers

# Guest layout is merged-/usr: /bin /sbin /lib /lib64 are links into /usr.
canon() {
    local p=$1
    case "$p" in
        /bin/*|/sbin/*|/lib/*|/lib64/*) p=/usr$p;;
        /bin|/sbin|/lib|/lib64) p=/usr$p;;
    esac
    printf '%s' "$p"
}

# put STAGE SRC DEST: copy SRC (dereferenced) to DEST inside STAGE. An existing
# entry (e.g. a busybox applet symlink) is removed first, so the copy never
# writes through the link into busybox itself.
put() {
    local stage=$1 src=$2 dest
    dest=$stage$(canon "$3")
    mkdir -p "$(dirname "$dest")"
    rm -f "$dest"
    cp -L --preserve=mode "$src" "$dest" || die "cannot copy $src to $3"
}

# libs_of BIN: print the absolute paths of BIN's shared libraries (incl. the
# dynamic loader). Nothing for static binaries. Dies on unresolved libraries.
libs_of() {
    local bin=$1 out
    if ! out=$(LC_ALL=C ldd "$bin" 2>&1); then
        case "$out" in
            *"not a dynamic executable"*|*"statically linked"*) return 0;;
            *) die "ldd $bin failed: $out";;
        esac
    fi
    case "$out" in *"statically linked"*) return 0;; esac
    if printf '%s\n' "$out" | grep -q 'not found'; then
        die "$bin: missing shared libraries: $(printf '%s\n' "$out" | grep 'not found' | tr -s ' \t' ' ')"
    fi
    printf '%s\n' "$out" | sed -n \
        -e 's/^[[:space:]]*[^[:space:]]* => \(\/[^[:space:]]*\) (0x[0-9a-f]*)$/\1/p' \
        -e 's/^[[:space:]]*\(\/[^[:space:]]*\) (0x[0-9a-f]*)$/\1/p'
}

# put_bin STAGE SRC DEST: binary plus its shared libraries.
put_bin() {
    local stage=$1 src=$2 dest=$3 lib libs
    [ -f "$src" ] || die "binary '$src' not found"
    [ -x "$src" ] || die "binary '$src' is not executable"
    put "$stage" "$src" "$dest"
    libs=$(libs_of "$src") || exit 1
    for lib in $libs; do
        [ -e "$stage$(canon "$lib")" ] && continue
        # already in the base archive (same host file: the base key covers it)
        [ -n "${IN_BASE[$(canon "$lib")]:-}" ] && continue
        put "$stage" "$lib" "$lib"
    done
}

# mkcpio STAGE: newc archive of STAGE's contents (without "."), owned by root.
mkcpio() {
    (cd "$1" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort \
        | cpio -o -H newc -R 0:0 --reproducible --quiet)
}

# Quote a value for a POSIX shell.
shq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

# ---------------------------------------------------------------- base

MODULES=("${BASE_MODULES[@]}" "${EXTRA_MODULES[@]}")
LOADS=("${DEFAULT_LOAD[@]}" "${LOADS[@]}" "${EXTRA_MODULES[@]}")

# Resolve the module closure (paths inside FF_KROOT).
module_files() {
    local m line
    for m in "${MODULES[@]}"; do
        line=$(modprobe -d "$FF_KROOT" -S "$FF_KVER" --show-depends "$m" 2>&1) \
            || die "module '$m' not found in kernel $FF_KVER: $line"
        printf '%s\n' "$line"
    done | sed -n 's/^insmod \([^ ]*\.ko[^ ]*\).*/\1/p' | LC_ALL=C sort -u
}

BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] && [ -x "$BUSYBOX" ] || die "busybox not found (run tests/kernel/setup.sh)"
# find_tool NAME: absolute path of NAME (also looked up in sbin dirs, which a
# non-root PATH may lack).
find_tool() {
    local p
    p=$(command -v "$1" 2>/dev/null || true)
    [ -n "$p" ] || for p in /usr/sbin/$1 /sbin/$1 /usr/bin/$1; do [ -x "$p" ] && break; p=""; done
    printf '%s' "$p"
}
NVME=$(find_tool nvme);       [ -n "$NVME" ] || die "nvme (nvme-cli) not found (run tests/kernel/setup.sh)"
MKE2FS=$(find_tool mke2fs);   [ -n "$MKE2FS" ] || die "mke2fs (e2fsprogs) not found (run tests/kernel/setup.sh)"
E2FSCK=$(find_tool e2fsck);   [ -n "$E2FSCK" ] || die "e2fsck (e2fsprogs) not found (run tests/kernel/setup.sh)"
HOST_BINS=("$NVME" "$MKE2FS" "$E2FSCK")

MODLIST=$(module_files) || exit 1
mapfile -t MODFILES <<<"$MODLIST"
[ -n "$MODLIST" ] || die "module closure is empty"

COMPRESS=${FF_INITRD_COMPRESS:-gzip}
case "$COMPRESS" in gzip|none) ;; *) die "FF_INITRD_COMPRESS must be gzip or none";; esac

base_key() {
    local f
    {
        echo "format 1 $COMPRESS"
        sha256sum "${BASH_SOURCE[0]}" "$FF_KERNEL_DIR/guest/init" "$FF_KERNEL_DIR/guest/ff-lib.sh"
        echo "kernel $FF_KVER $(cat "$KCACHE/$FF_KVER/.ready" 2>/dev/null)"
        echo "modules ${MODULES[*]}"
        for f in "$BUSYBOX" "${HOST_BINS[@]}"; do
            # shellcheck disable=SC2046 # library paths have no blanks
            stat -L -c '%n %s %Y' "$f" $(libs_of "$f")
        done
        [ ! -f /etc/mke2fs.conf ] || stat -L -c '%n %s %Y' /etc/mke2fs.conf
        printf '%s\n' "${MODFILES[@]}"
    } | sha256sum | cut -c1-16
}

build_base() { # OUTFILE
    local out=$1 stage a p
    stage=$(mktemp -d "$ICACHE/stage.XXXXXX")
    CLEANUP+=("$stage" "$out.tmp")
    mkdir -p "$stage"/usr/{bin,sbin,lib,lib64} "$stage"/{dev,proc,sys,tmp,run,mnt,root,etc,var/tmp}
    mkdir -p "$stage/usr/local/bin" "$stage/usr/local/sbin" "$stage/usr/lib/ferrofab" "$stage/ferrofab"
    chmod 1777 "$stage/tmp" "$stage/var/tmp"
    ln -s usr/bin "$stage/bin"; ln -s usr/sbin "$stage/sbin"
    ln -s usr/lib "$stage/lib"; ln -s usr/lib64 "$stage/lib64"
    # Device nodes need root; /init reopens the console after mounting devtmpfs.
    mknod -m 600 "$stage/dev/console" c 5 1 2>/dev/null || true
    mknod -m 666 "$stage/dev/null" c 1 3 2>/dev/null || true

    # busybox + one symlink per applet
    put_bin "$stage" "$BUSYBOX" /usr/bin/busybox
    while IFS= read -r a; do
        [ -n "$a" ] || continue
        p=$stage$(canon "/$a")
        [ -e "$p" ] || [ -L "$p" ] && continue
        mkdir -p "$(dirname "$p")"
        ln -s /usr/bin/busybox "$p"
    done < <("$BUSYBOX" --list-full)
    [ -L "$stage/usr/sbin/modprobe" ] || die "busybox has no modprobe applet"
    [ -L "$stage/usr/bin/sh" ] || die "busybox has no sh applet"

    # real tools (replacing busybox applets of the same name, e.g. mke2fs)
    put_bin "$stage" "$NVME" /usr/sbin/nvme
    put_bin "$stage" "$MKE2FS" /usr/sbin/mke2fs
    put_bin "$stage" "$E2FSCK" /usr/sbin/e2fsck
    for p in mkfs.ext4 mkfs.ext2 mkfs.ext3; do rm -f "$stage/usr/sbin/$p"; ln -s mke2fs "$stage/usr/sbin/$p"; done
    for p in fsck.ext4 fsck.ext2 fsck.ext3; do rm -f "$stage/usr/sbin/$p"; ln -s e2fsck "$stage/usr/sbin/$p"; done
    [ -f /etc/mke2fs.conf ] && put "$stage" /etc/mke2fs.conf /etc/mke2fs.conf
    [ -e "$stage/usr/lib64/ld-linux-x86-64.so.2" ] || die "dynamic loader not copied"

    # kernel modules: the closure only, with a modules.dep of its own
    local kmod=/lib/modules/$FF_KVER f rel
    for f in "${MODFILES[@]}"; do
        rel=${f#"$FF_KROOT"}
        put "$stage" "$f" "$rel"
    done
    for f in modules.order modules.builtin modules.builtin.modinfo; do
        [ -f "$FF_KROOT$kmod/$f" ] && put "$stage" "$FF_KROOT$kmod/$f" "$kmod/$f"
    done
    depmod -b "$stage" "$FF_KVER" || die "depmod on the staged module tree failed"
    [ -s "$stage/usr$kmod/modules.dep" ] || die "staged modules.dep is empty"

    # minimal /etc
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
    printf 'root:x:0:\ntty:x:5:\n' >"$stage/etc/group"
    printf '127.0.0.1 localhost\n::1 localhost\n10.0.2.2 host\n' >"$stage/etc/hosts"
    : >"$stage/etc/fstab"
    ln -s /proc/mounts "$stage/etc/mtab"

    put "$stage" "$FF_KERNEL_DIR/guest/init" /init
    chmod 755 "$stage/init"
    put "$stage" "$FF_KERNEL_DIR/guest/ff-lib.sh" /usr/lib/ferrofab/ff-lib.sh

    if [ "$COMPRESS" = gzip ]; then
        mkcpio "$stage" | gzip -6 -n >"$out.tmp"
    else
        mkcpio "$stage" >"$out.tmp"
    fi
    # The overlay is appended uncompressed; the kernel wants it 4-byte aligned.
    local size pad
    size=$(stat -c %s "$out.tmp")
    pad=$(( (4 - size % 4) % 4 ))
    [ "$pad" -eq 0 ] || head -c "$pad" /dev/zero >>"$out.tmp"
    # list of the base's files, so the overlay can skip libraries it has
    (cd "$stage" && find . -mindepth 1 ! -type d -printf '/%P\n') >"${out%%.cpio*}.files"
    mv "$out.tmp" "$out"
    rm -rf "$stage"
}

mkdir -p "$ICACHE"
KEY=$(base_key)
BASE=$ICACHE/base-$KEY.cpio
[ "$COMPRESS" = gzip ] && BASE=$BASE.gz
exec 8>"$ICACHE/.lock"
flock 8 || die "cannot lock $ICACHE/.lock"
if [ ! -s "$BASE" ] || [ ! -f "${BASE%%.cpio*}.files" ]; then
    say "building base initramfs $BASE"
    t0=$(now_ms)
    build_base "$BASE"
    say "base initramfs built in $(( $(now_ms) - t0 )) ms ($(du -h "$BASE" | cut -f1))"
    # prune: keep the three newest bases and anything used in the last hour
    # (a concurrent run may be about to read it)
    ls -1t "$ICACHE"/base-*.cpio* 2>/dev/null | tail -n +4 | while IFS= read -r old; do
        if [ -n "$(find "$old" -mmin +60 2>/dev/null)" ]; then rm -f "$old" "${old%%.cpio*}.files"; fi
    done
else
    touch "$BASE"
fi
flock -u 8

# ---------------------------------------------------------------- overlay

OV=$(mktemp -d "${TMPDIR:-/tmp}/ff-overlay.XXXXXX")
CLEANUP+=("$OV" "$OUT.tmp")
mkdir -p "$OV/ferrofab"
if [ -n "$SCRIPT" ]; then
    cp "$SCRIPT" "$OV/ferrofab/test.sh"
    chmod 755 "$OV/ferrofab/test.sh"
fi

for b in "${BINS[@]}"; do
    src=${b%%:*}
    if [ "$src" != "$b" ]; then dest=${b#*:}; else dest=/usr/local/bin/$(basename "$src"); fi
    case "$dest" in /*) ;; *) die "--bin destination '$dest' must be absolute";; esac
    if [ "${#IN_BASE[@]}" -eq 0 ] && [ -f "${BASE%%.cpio*}.files" ]; then
        while IFS= read -r f; do IN_BASE[$f]=1; done <"${BASE%%.cpio*}.files"
    fi
    put_bin "$OV" "$src" "$dest"
done
for f in "${FILES[@]}"; do
    src=${f%%:*}
    dest=${f#*:}
    [ "$src" != "$f" ] && [ -n "$dest" ] || die "--file needs SRC:DEST, got '$f'"
    case "$dest" in /*) ;; *) die "--file destination '$dest' must be absolute";; esac
    [ -e "$src" ] || die "--file source '$src' not found"
    d=$OV$(canon "$dest")
    mkdir -p "$(dirname "$d")"
    rm -rf "$d"
    cp -a "$src" "$d" || die "cannot copy $src"
done

{
    echo "# written by build-initramfs.sh"
    for e in "${ENVS[@]}"; do
        k=${e%%=*}
        [ "$k" != "$e" ] || die "--env needs KEY=VALUE, got '$e'"
        [[ "$k" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--env: invalid variable name '$k'"
        printf '%s=%s\n' "$k" "$(shq "${e#*=}")"
    done
} >"$OV/ferrofab/env"
{
    printf 'set --'
    for a in "${ARGS[@]}"; do printf ' %s' "$(shq "$a")"; done
    printf '\n'
} >"$OV/ferrofab/args"
{
    echo "FF_KVER=$(shq "$FF_KVER")"
    echo "FF_LOAD_MODULES=$(shq "${LOADS[*]}")"
    echo "FF_SHELL=$SHELL_MODE"
    echo "FF_KMSG_PORT=$(shq "$KMSG_PORT")"
    echo "FF_GUEST_IP=10.0.2.15"
    echo "FF_HOST_IP=10.0.2.2"
    echo "export FF_KVER FF_GUEST_IP FF_HOST_IP"
    echo "export FF_LIB=/usr/lib/ferrofab/ff-lib.sh"
} >"$OV/ferrofab/config"

# The overlay must not carry entries for the merged-/usr links of the base.
for l in bin sbin lib lib64; do
    [ ! -e "$OV/$l" ] || die "internal: overlay has /$l"
done

mkdir -p "$(dirname "$OUT")"
{ cat "$BASE"; mkcpio "$OV"; } >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
