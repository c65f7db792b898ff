# Shared helpers for ./tests/run and the suites. Source it; do not run it.
#
# Everything a suite needs is installed here, idempotently, so that a fresh
# Debian machine (and CI) passes with no manual steps. A tool that cannot be
# installed stops the suite with an error: suites never skip silently.

FF_REPO=${FF_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
FF_WORK=${FF_WORK:-$FF_REPO/tests/.work}
mkdir -p "$FF_WORK"

ff_say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
ff_die() { printf 'tests: error: %s\n' "$*" >&2; exit 1; }

_ff_apt_updated=0
# ff_need_pkgs PKG... : install the Debian packages that are missing.
ff_need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || ff_die "packages missing and not root: ${missing[*]}"
    if [ "$_ff_apt_updated" -eq 0 ]; then
        ff_say "apt-get update"
        apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null || ff_die "apt-get update failed"
        _ff_apt_updated=1
    fi
    ff_say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null \
        || ff_die "apt-get install ${missing[*]} failed"
}

# ff_need_cmd CMD... : fail loudly if a command is missing.
ff_need_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || ff_die "required command '$c' not found"
    done
}

# ff_cargo ARGS... : cargo with the repository as working directory. The
# etcd client crate compiles etcd's protos at build time with protoc.
ff_cargo() {
    ff_need_pkgs protobuf-compiler
    (cd "$FF_REPO" && cargo "$@")
}

# ff_release_bin NAME : path of a release binary, building it if needed.
ff_release_bin() {
    ff_cargo build --release --quiet --bin "$1" >&2 || ff_die "building $1 failed"
    echo "${CARGO_TARGET_DIR:-$FF_REPO/target}/release/$1"
}

# ff_free_port : a TCP port nobody listens on right now.
ff_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# ff_wait_line FILE PATTERN TIMEOUT : wait until FILE has a line matching PATTERN.
ff_wait_line() {
    local file=$1 pattern=$2 timeout=${3:-30} i
    for ((i = 0; i < timeout * 10; i++)); do
        grep -q "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    ff_die "timed out after ${timeout}s waiting for '$pattern' in $file"
}
