#!/usr/bin/env bash
# Suite `kernel`: Linux 6.1's NVMe/TCP drivers under qemu (TCG) against
# ferrofab's target and initiator. See tests/kernel/README.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ff_need_pkgs python3
"$FF_REPO/tests/kernel/setup.sh"
nvmeof=$(ff_release_bin ferrofab-nvmeof)

ff_say "kernel: Linux nvme-tcp host against the built-in target"
python3 "$FF_REPO/tests/kernel/target/run.py" "$nvmeof"

ff_say "kernel: built-in initiator against Linux nvmet"
"$FF_REPO/tests/kernel/initiator-vs-nvmet.sh"
