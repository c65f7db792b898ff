#!/usr/bin/env bash
# Suite `kernel`: Linux 6.1's NVMe/TCP drivers under qemu (TCG) against
# ferrofab's target and initiator, and the agent's `kernel` driver in the
# guest under a real controller. See tests/kernel/README.md.
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
