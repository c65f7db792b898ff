#!/usr/bin/env bash
# tests/kernel/setup.sh - prepare the host for the qemu kernel-interop harness.
#
# Idempotent. On every call it:
#   1. installs (only if missing) the Debian packages the harness needs:
#      qemu-system-x86, busybox-static, kmod, cpio, nvme-cli, e2fsprogs, gzip,
#      xz-utils;
#   2. resolves the kernel package that Debian's linux-image-amd64 depends on
#      (e.g. linux-image-6.1.0-56-amd64), downloads it with `apt-get download`
#      into tests/.cache/kernel/, unpacks it with `dpkg -x` and runs `depmod -b`;
#      it also decompresses the bzImage into an ELF vmlinux: qemu boots that
#      through its PVH entry point, which skips the ~4 s in-guest kernel
#      decompression under TCG;
#   3. writes tests/.cache/kernel/current.env describing the unpacked kernel
#      (FF_KVER, FF_KROOT, FF_VMLINUZ, FF_VMLINUX, FF_KPKG, FF_KDEB).
# Anything already done is skipped. Anything that cannot be done is an error.
#
# Environment:
#   FERROFAB_TEST_CACHE  cache root (default: <repo>/tests/.cache)
#   FERROFAB_KERNEL_PKG  kernel package to use instead of the one that
#                        linux-image-amd64 depends on (e.g. linux-image-6.1.0-56-amd64)
#   FF_SETUP_QUIET=1     print nothing when there is nothing to do
#
# Exit status: 0 ready, non-zero with an "setup.sh: error: ..." message otherwise.
set -euo pipefail
# depmod, modprobe, nvme, mke2fs live in sbin, which a non-root PATH may lack.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin;; esac

FF_KERNEL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FF_REPO=$(cd "$FF_KERNEL_DIR/../.." && pwd)
FF_CACHE=${FERROFAB_TEST_CACHE:-$FF_REPO/tests/.cache}
KCACHE=$FF_CACHE/kernel
QUIET=${FF_SETUP_QUIET:-0}

die() { printf 'setup.sh: error: %s\n' "$*" >&2; exit 1; }
warn() { printf 'setup.sh: warning: %s\n' "$*" >&2; }
say() { [ "$QUIET" = 1 ] || printf 'setup.sh: %s\n' "$*" >&2; }

export DEBIAN_FRONTEND=noninteractive
# apt-get download as root into a root-owned directory otherwise warns that
# the _apt sandbox user cannot write there.
APT_OPTS=(-o APT::Sandbox::User=root -o Dpkg::Use-Pty=0)

is_root() { [ "$(id -u)" -eq 0 ]; }

pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

apt_lists_present() {
    compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" = 1 ] && return 0
    is_root || die "apt-get update needs root; re-run as root"
    say "running apt-get update"
    apt-get "${APT_OPTS[@]}" update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
}

apt_has_candidate() { # PKG [RELEASE]
    local out
    if [ -n "${2:-}" ]; then
        out=$(apt-cache policy -t "$2" "$1" 2>/dev/null) || return 1
    else
        out=$(apt-cache policy "$1" 2>/dev/null) || return 1
    fi
    printf '%s\n' "$out" | grep -q 'Candidate: [^(]'
}

apt_install() { # PKG... (refuses to remove anything)
    is_root || die "missing packages: $* -- install them or re-run as root"
    say "installing: $*"
    apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends --no-remove "$@" >&2 && return 0
    # stale package lists (404 on a superseded version): refresh once, retry
    [ "$APT_UPDATED" = 1 ] || { apt_update; apt-get "${APT_OPTS[@]}" install -y -q \
        --no-install-recommends --no-remove "$@" >&2 && return 0; }
    die "apt-get install $* failed"
}

codename() {
    local c
    c=$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")
    [ -n "$c" ] || die "cannot determine the Debian codename from /etc/os-release"
    printf '%s' "$c"
}

# Debian 12 machines of this project ship qemu-utils from bookworm-backports;
# it Breaks qemu-system-common << 8.0, so installing qemu-system-x86 7.2 from
# bookworm would remove qemu-utils. In that case take qemu from backports.
install_qemu() {
    if apt-get "${APT_OPTS[@]}" install -s --no-install-recommends qemu-system-x86 2>/dev/null \
            | grep -q '^Remv '; then
        local cn bpo
        cn=$(codename)
        bpo="$cn-backports"
        say "qemu-system-x86 from $cn would remove installed packages (qemu-utils from backports?); using $bpo"
        if ! apt_has_candidate qemu-system-x86 "$bpo"; then
            local src=/etc/apt/sources.list.d/ferrofab-$bpo.sources
            if [ ! -e "$src" ]; then
                say "adding $src"
                cat >"$src" <<EOF
# Added by ferrofab tests/kernel/setup.sh: qemu-system-x86 must match the
# installed qemu-utils from $bpo. Backports keep their default low priority.
Types: deb
URIs: http://deb.debian.org/debian
Suites: $bpo
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
            fi
            APT_UPDATED=0
            apt_update
            apt_has_candidate qemu-system-x86 "$bpo" \
                || die "qemu-system-x86 is not available from $bpo either"
        fi
        is_root || die "qemu-system-x86 is missing -- install it or re-run as root"
        say "installing: qemu-system-x86 (from $bpo)"
        apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends --no-remove \
            -t "$bpo" qemu-system-x86 >&2 || die "apt-get install -t $bpo qemu-system-x86 failed"
    else
        apt_install qemu-system-x86
    fi
}

ensure_packages() {
    # package -> a file it must provide
    local -a want=(
        "qemu-system-x86:/usr/bin/qemu-system-x86_64"
        "busybox-static:/bin/busybox"
        "kmod:/usr/bin/kmod"
        "cpio:/usr/bin/cpio"
        "nvme-cli:/usr/sbin/nvme"
        "e2fsprogs:/usr/sbin/mkfs.ext4"
        "gzip:/usr/bin/gzip"
        "xz-utils:/usr/bin/xz"
    )
    local -a missing=()
    local ent pkg
    for ent in "${want[@]}"; do
        pkg=${ent%%:*}
        if [ "$pkg" = busybox-static ] && pkg_installed busybox; then
            continue # dynamic busybox also works: its libraries get copied
        fi
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        is_root || die "missing packages: ${missing[*]} -- install them or re-run as root"
        apt_lists_present || apt_update
        local p need_qemu=0 others=()
        for p in "${missing[@]}"; do
            if [ "$p" = qemu-system-x86 ]; then need_qemu=1; else others+=("$p"); fi
        done
        for p in "${others[@]}" $([ "$need_qemu" = 1 ] && echo qemu-system-x86); do
            apt_has_candidate "$p" && continue
            apt_update
            apt_has_candidate "$p" || [ "$p" = qemu-system-x86 ] \
                || die "package $p has no installation candidate"
        done
        [ "${#others[@]}" -eq 0 ] || apt_install "${others[@]}"
        [ "$need_qemu" = 0 ] || install_qemu
    fi
    for ent in "${want[@]}"; do
        [ -e "${ent#*:}" ] || die "package ${ent%%:*} is installed but ${ent#*:} is missing"
    done
    local c
    for c in depmod modprobe ldd flock sha256sum; do
        command -v "$c" >/dev/null || die "required command '$c' not found"
    done
    [ -e /usr/share/seabios/bios-256k.bin ] || [ -e /usr/share/qemu/bios-256k.bin ] \
        || die "qemu BIOS (seabios) not found"
}

# extract_vmlinux BZIMAGE OUT: find the compressed payload in the bzImage and
# decompress it to an ELF file. Returns 1 when no payload could be found.
extract_vmlinux() {
    local img=$1 out=$2 fmt magic off
    local -a cmd
    for fmt in xz zstd gzip; do
        case "$fmt" in
            xz) magic='\xfd\x37\x7a\x58\x5a\x00'; cmd=(xz -dc --single-stream);;
            zstd) magic='\x28\xb5\x2f\xfd'; cmd=(zstd -dcq);;
            gzip) magic='\x1f\x8b\x08'; cmd=(gzip -dc);;
        esac
        command -v "${cmd[0]}" >/dev/null || continue
        for off in $(LC_ALL=C grep -obUaP "$magic" "$img" | cut -d: -f1 | head -n 5); do
            # gzip complains about the trailing bytes; the output is complete.
            tail -c +"$((off + 1))" "$img" | "${cmd[@]}" >"$out.tmp" 2>/dev/null || true
            if [ "$(head -c 4 "$out.tmp" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] \
                    && [ "$(stat -c %s "$out.tmp")" -gt 4000000 ]; then
                if command -v readelf >/dev/null \
                        && ! readelf -n "$out.tmp" 2>/dev/null | grep -q 'note type: (0x00000012)\|PHYS32_ENTRY'; then
                    warn "the decompressed kernel has no PVH entry note; booting the bzImage"
                    rm -f "$out.tmp"
                    return 1
                fi
                mv "$out.tmp" "$out"
                return 0
            fi
        done
    done
    rm -f "$out.tmp"
    return 1
}

resolve_kernel_pkg() {
    if [ -n "${FERROFAB_KERNEL_PKG:-}" ]; then
        printf '%s' "$FERROFAB_KERNEL_PKG"
        return
    fi
    # apt-cache takes ~0.8 s; reuse the answer while the apt lists are unchanged.
    local key memo=$KCACHE/.resolved out pkg
    key=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo none)
    if [ -f "$memo" ] && [ "$(sed -n 1p "$memo")" = "$key" ]; then
        pkg=$(sed -n 2p "$memo")
        if [ -n "$pkg" ]; then printf '%s' "$pkg"; return; fi
    fi
    out=$(apt-cache depends linux-image-amd64 2>/dev/null || true)
    if ! printf '%s\n' "$out" | grep -q 'Depends: linux-image-'; then
        if is_root; then
            apt_update
            out=$(apt-cache depends linux-image-amd64 2>/dev/null || true)
        fi
    fi
    pkg=$(printf '%s\n' "$out" | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n1)
    if [ -n "$pkg" ]; then
        key=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo none)
        printf '%s\n%s\n' "$key" "$pkg" >"$memo.$$" && mv "$memo.$$" "$memo"
    fi
    printf '%s' "$pkg"
}

ensure_kernel() {
    mkdir -p "$KCACHE"
    local pkg kver
    pkg=$(resolve_kernel_pkg)
    if [ -z "$pkg" ]; then
        # No apt metadata (offline, not root): fall back to a kernel already
        # in the cache, loudly.
        if [ -f "$KCACHE/current.env" ]; then
            warn "cannot resolve linux-image-amd64 via apt-cache; using the cached kernel from $KCACHE/current.env"
            return 0
        fi
        die "cannot resolve the versioned kernel package of linux-image-amd64 (apt-cache depends linux-image-amd64 found nothing; is apt-get update done?)"
    fi
    case "$pkg" in linux-image-*) ;; *) die "unexpected kernel package name '$pkg'";; esac
    kver=${pkg#linux-image-}
    local dir=$KCACHE/$kver
    local root=$dir/root
    if [ -f "$dir/.ready" ] && [ -f "$root/boot/vmlinuz-$kver" ] && [ -e "$dir/.vmlinux-done" ] \
            && [ -f "$root/lib/modules/$kver/modules.dep" ]; then
        say "kernel $kver already unpacked in $root"
    else
        mkdir -p "$dir"
        local deb
        deb=$(ls -1 "$dir"/"${pkg}"_*.deb 2>/dev/null | tail -n1 || true)
        if [ -z "$deb" ]; then
            say "downloading $pkg"
            (cd "$dir" && apt-get "${APT_OPTS[@]}" download -q "$pkg" >&2) || {
                apt_update
                (cd "$dir" && apt-get "${APT_OPTS[@]}" download -q "$pkg" >&2) \
                    || die "apt-get download $pkg failed"
            }
            deb=$(ls -1 "$dir"/"${pkg}"_*.deb 2>/dev/null | tail -n1 || true)
            [ -n "$deb" ] || die "apt-get download $pkg produced no .deb in $dir"
        fi
        say "unpacking $(basename "$deb")"
        rm -rf "$root" "$root.tmp"
        dpkg -x "$deb" "$root.tmp" || die "dpkg -x $deb failed"
        [ -f "$root.tmp/boot/vmlinuz-$kver" ] || die "$deb has no boot/vmlinuz-$kver"
        [ -d "$root.tmp/lib/modules/$kver" ] || die "$deb has no lib/modules/$kver"
        # Newer Debian kernels (6.12) ship xz-compressed modules, which
        # busybox insmod/modprobe cannot load: decompress them first.
        if find "$root.tmp/lib/modules/$kver" -name '*.ko.xz' -print -quit | grep -q .; then
            say "decompressing the kernel modules (.ko.xz)"
            find "$root.tmp/lib/modules/$kver" -name '*.ko.xz' -print0 \
                | xargs -0 -r -n 64 xz -d || die "xz -d of the modules failed"
        fi
        depmod -b "$root.tmp" "$kver" || die "depmod -b $root.tmp $kver failed"
        mv "$root.tmp" "$root"
        rm -f "$dir/vmlinux" "$dir/.vmlinux-done"
        say "decompressing the kernel image to $dir/vmlinux"
        if ! extract_vmlinux "$root/boot/vmlinuz-$kver" "$dir/vmlinux"; then
            warn "could not decompress $root/boot/vmlinuz-$kver; guests boot the bzImage (~4 s slower)"
        fi
        : >"$dir/.vmlinux-done"
        printf '%s\n' "$(basename "$deb")" >"$dir/.ready"
        # Drop older kernels from the cache.
        local old
        for old in "$KCACHE"/*/; do
            old=${old%/}
            [ "$old" = "$dir" ] && continue
            [ -f "$old/.ready" ] || [ -d "$old/root" ] || continue
            say "removing old cached kernel $old"
            rm -rf "$old"
        done
    fi
    local deb_name
    deb_name=$(cat "$dir/.ready")
    local tmp=$KCACHE/current.env.tmp.$$
    {
        printf 'FF_KPKG=%q\n' "$pkg"
        printf 'FF_KVER=%q\n' "$kver"
        printf 'FF_KROOT=%q\n' "$root"
        printf 'FF_VMLINUZ=%q\n' "$root/boot/vmlinuz-$kver"
        if [ -f "$dir/vmlinux" ]; then
            printf 'FF_VMLINUX=%q\n' "$dir/vmlinux"
        else
            printf 'FF_VMLINUX=\n'
        fi
        printf 'FF_KDEB=%q\n' "$dir/$deb_name"
    } >"$tmp"
    mv "$tmp" "$KCACHE/current.env"
}

main() {
    case "${1:-}" in
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0;;
        "") ;;
        *) die "unknown argument '$1' (setup.sh takes no arguments)";;
    esac
    mkdir -p "$KCACHE"
    # Serialise concurrent callers (parallel test runs share the cache).
    exec 9>"$KCACHE/.setup.lock"
    flock 9 || die "cannot lock $KCACHE/.setup.lock"
    ensure_packages
    ensure_kernel
    say "ready: $(tr '\n' ' ' <"$KCACHE/current.env")"
}

main "$@"
