#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the Debian packages the real
# peers need (when run as root and they are missing), then checks formatting
# and lints, and runs every test, including those with QEMU guests and DPDK
# testpmd. Under CI=true a missing peer fails the run instead of being skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(qemu-system-x86 dpdk-dev linux-image-amd64 busybox-static cpio iproute2 iperf3 kmod)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -eq 0 ]; then
        echo "== installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "== not root: cannot install ${missing[*]}; tests that need them will say so" >&2
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
# A hung test must fail the run with its name on screen, not eat CI's time:
# the suite takes about ten minutes on two cores, so 25 is a generous bound.
timeout --foreground --kill-after=30s "${SUITE_TIMEOUT:-25m}" \
    cargo test --locked --lib --bins --tests -- --test-threads="${TEST_THREADS:-2}"
echo "== cargo test --benches (each benchmark once, so they keep working)"
# Criterion's harness takes no libtest options: no --test-threads here.
timeout --foreground --kill-after=30s 5m cargo test --locked --benches
