#!/usr/bin/env bash
# Suite `default`: style, lints, unit tests, the bounded fuzz run and the
# loopback end-to-end tests. Everything cargo can run.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

# Loop devices and filesystems for the backend and FUSE tests; fio for the
# FUSE test of asynchronous direct I/O (libaio).
ff_need_pkgs util-linux mount e2fsprogs fuse3 kmod fio
ff_need_cmd cargo losetup mkfs.ext4 e2fsck fio
# A real etcd for the etcd store backend's tests (controller/tests/
# store_conformance.rs, etcd_backend.rs); they fail loudly without it.
ff_need_pkgs etcd-server
ff_need_cmd etcd

ff_say "cargo fmt --check"
ff_cargo fmt --all -- --check
ff_say "cargo clippy"
ff_cargo clippy --workspace --all-targets --quiet -- -D warnings
ff_say "cargo test"
ff_cargo test --workspace
