#!/usr/bin/env bash
# Suite `kernel`: Linux 6.1's NVMe/TCP drivers under qemu (TCG) against
# ferrofab's target and initiator, the agent's `kernel` driver in the
# guest under a real controller, and DH-HMAC-CHAP in-band authentication
# against Linux 6.12 (6.1 has none) in both directions, and the ublk
# block-device exposure (`connect --expose-block`) on Linux 6.12. See
# tests/kernel/README.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ff_need_pkgs python3 fuse3 binutils
ff_need_cmd strip mkfifo
"$FF_REPO/tests/kernel/setup.sh"
nvmeof=$(ff_release_bin ferrofab-nvmeof)

ff_say "kernel: Linux nvme-tcp host against the built-in target"
python3 "$FF_REPO/tests/kernel/target/run.py" "$nvmeof"

ff_say "kernel: built-in initiator against Linux nvmet"
"$FF_REPO/tests/kernel/initiator-vs-nvmet.sh"

ff_say "kernel: the agent's kernel driver (nvmet / nvme-fabrics) under a controller"
"$FF_REPO/tests/kernel/kdriver.sh"

ff_say "kernel: the agent's kernel driver on Linux 6.1 where authentication is required (AuthUnsupported)"
"$FF_REPO/tests/kernel/kdriver.sh" --auth-unsupported

ff_say "kernel: the agent's kernel driver with DH-HMAC-CHAP keys from the controller (Linux 6.12)"
"$FF_REPO/tests/kernel/kdriver.sh" --auth

ff_say "kernel: DH-HMAC-CHAP authentication against Linux 6.12 (host and nvmet)"
ff_cargo build --release --quiet -p ferrofab-nvmeof --example auth_interop >&2 \
    || ff_die "building the auth_interop example failed"
"$FF_REPO/tests/kernel/auth.sh" "$nvmeof" "${CARGO_TARGET_DIR:-$FF_REPO/target}/release/examples/auth_interop"

ff_say "kernel: the ublk block-device exposure (connect --expose-block) on Linux 6.12"
"$FF_REPO/tests/kernel/ublk.sh" "$nvmeof"
