#!/usr/bin/env bash
# Suite `web`: the HTTP/JSON API and the dashboard against `ferrofab dev`
# (a real controller and agents on loopback). Checks the OpenAPI document
# with openapi-spec-validator, generates a Python client from it with
# openapi-python-client and runs a smoke test through it, then drives the
# dashboard in headless Chromium (Debian's chromium and chromium-driver,
# Selenium from PyPI): sign in, the demo layout, create and attach a volume
# and watch it become ready live, move, resize, a refused over-quota create
# showing the reason, a tenant token that sees only its tenant, and no
# console errors. Screenshots go to tests/.work/web/. Driver:
# tests/web/driver.py.
#
# FF_WEB_PROFILE=release uses release binaries (default: debug, which the
# default suite has mostly built already, so the cold run stays short).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib/common.sh"

ff_need_pkgs python3 python3-venv fuse3 chromium chromium-driver
ff_need_cmd python3 fusermount3 chromium chromedriver
[ "$(id -u)" -eq 0 ] || ff_die "the web suite runs ferrofab dev (FUSE): run it as root"

venv=$FF_WORK/web-venv
if ! "$venv/bin/python" -c 'import selenium, openapi_spec_validator' 2>/dev/null \
    || [ ! -x "$venv/bin/openapi-python-client" ]; then
    ff_say "installing selenium, openapi-spec-validator, openapi-python-client in $venv"
    python3 -m venv "$venv" || ff_die "creating $venv failed"
    "$venv/bin/pip" install --quiet selenium openapi-spec-validator openapi-python-client >&2 \
        || ff_die "pip install selenium openapi-spec-validator openapi-python-client failed"
fi

profile=${FF_WEB_PROFILE:-debug}
flags=(--quiet -p ferrofab-cli)
[ "$profile" = release ] && flags+=(--release)
ff_say "building ferrofab ($profile)"
ff_cargo build "${flags[@]}" >&2 || ff_die "build failed"
export FF_WEB_BIN=${CARGO_TARGET_DIR:-$FF_REPO/target}/$profile
export FF_WEB_WORK=$FF_WORK/web FF_REPO
rm -rf "$FF_WEB_WORK"
mkdir -p "$FF_WEB_WORK"
exec "$venv/bin/python" "$FF_REPO/tests/web/driver.py"
