# entragate container image: a static (musl) binary in an otherwise empty image.
#
#   docker build -t entragate .          # or: podman build -t entragate .
#   docker run --rm -p 8080:8080 \
#     -e ENTRAGATE_ENTRA__TENANT_ID=<tenant> \
#     -e ENTRAGATE_ENTRA__AUDIENCES='["https://api.contoso.com"]' \
#     -e ENTRAGATE_UPSTREAM__URL=http://ehrbase:8080 entragate
#
# The image holds /entragate, the CA bundle (to reach Microsoft Entra ID and https upstreams
# over TLS), /etc/passwd and /etc/group naming the non-root user 65532, and container defaults
# at /etc/entragate/entragate.toml ($ENTRAGATE_CONFIG). No shell, no package manager.
# Ports: 8080 the gateway (HTTP, or HTTPS with server.tls_cert/tls_key), 9090 the admin
# listener (/healthz, /readyz, /metrics; keep it inside the cluster).
#
# BINARY_STAGE=prebuilt packs a binary built outside the image instead of compiling it here
# (CI, where no registry is reachable): put the static binary at target/image/out/entragate
# and a CA bundle at target/image/out/etc/ssl/certs/ca-certificates.crt, then
#   podman build --network=none --build-arg BINARY_STAGE=prebuilt -t entragate .
# (.ci/packaging.sh does exactly this). Both ways the runtime stage below is the same.
ARG BINARY_STAGE=build

# --- the static binary, compiled from source ----------------------------------------------
FROM docker.io/library/rust:1.95-slim-bookworm AS build
# musl-gcc builds aws-lc (the TLS and JWT crypto) for the static target. Versions are those
# of the base image's Debian release (pinning them would break at its next point release).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# The crate as .dockerignore lets it in (every target Cargo.toml may name, none of target/).
COPY . ./
# musl-gcc for the C in the tree (aws-lc, mimalloc); no symbol table in the image's binary
# (3.4 MB of it; a panic still names its message and place).
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CARGO_PROFILE_RELEASE_STRIP=symbols
# mimalloc in place of musl's malloc (docs/performance.md, "The image's allocator").
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin entragate --features mimalloc \
 && mkdir -p /out/etc/ssl/certs \
 && cp target/x86_64-unknown-linux-musl/release/entragate /out/entragate \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt

# --- or a binary built outside (see above) ------------------------------------------------
FROM scratch AS prebuilt
COPY target/image/out/ /out/

FROM ${BINARY_STAGE} AS binary

# --- the image ----------------------------------------------------------------------------
FROM scratch AS runtime
COPY --from=binary /out/ /
COPY deploy/image/passwd deploy/image/group /etc/
COPY deploy/image/entragate.toml /etc/entragate/entragate.toml
ENV ENTRAGATE_CONFIG=/etc/entragate/entragate.toml \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/entragate"]
CMD ["serve"]
