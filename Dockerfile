# syntax=docker/dockerfile:1
#
# One image holds every QapMap binary; the command picks the process:
#   docker run qapmap qapmap-ledger
# Stages: cargo-chef plans and cooks the dependency graph (a layer that only
# changes when Cargo.toml/Cargo.lock do), then the workspace is built in release
# mode, then the binaries are copied into debian:bookworm-slim as a non-root user.
# The build needs no protoc (the proto crate uses a vendored one), no database
# (queries are checked at run time, not with sqlx macros against a live server)
# and no network at run time. See deploy/README.md for what was and was not
# validated: this file has not been built on the machines that wrote it.

ARG RUST_VERSION=1.95
ARG GO_VERSION=1.24
ARG DEBIAN_RELEASE=bookworm

# --- cargo-chef, pinned -------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /app

# --- plan: a recipe of the dependency graph -----------------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- build: dependencies first (cached), then our crates ----------------------
FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked \
        --bin qapmap-equity --bin qapmap-shareholder --bin qapmap-ledger \
        --bin qapmap-orchestrator --bin qapmap-demo \
    && mkdir -p /out \
    && cp target/release/qapmap-equity target/release/qapmap-shareholder \
          target/release/qapmap-ledger target/release/qapmap-orchestrator \
          target/release/qapmap-demo /out/

# --- grpc_health_probe for docker-compose health checks ------------------------
# Built from its Go module (pinned), not downloaded as a prebuilt binary.
# Kubernetes does not need it: its probes use the native `grpc:` handler.
FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS healthprobe
ARG GRPC_HEALTH_PROBE_VERSION=v0.4.39
RUN CGO_ENABLED=0 go install "github.com/grpc-ecosystem/grpc-health-probe@${GRPC_HEALTH_PROBE_VERSION}"

# --- runtime -------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 qapmap \
    && useradd --system --uid 10001 --gid qapmap --no-create-home --shell /usr/sbin/nologin qapmap \
    && mkdir -p /etc/qapmap/jwt /etc/qapmap/nats /var/lib/qapmap/demo-key \
    && chown 10001:10001 /etc/qapmap/jwt /var/lib/qapmap/demo-key \
    && chmod 700 /var/lib/qapmap/demo-key
# Mount points: /etc/qapmap/jwt for the JWKS (QAPMAP_JWT_JWKS_FILE), and
# /etc/qapmap/nats for a NATS .creds file (QAPMAP_NATS_CREDENTIALS_FILE), as
# Kubernetes mounts them. docker compose mounts named volumes on
# /etc/qapmap/jwt and /var/lib/qapmap/demo-key (the demo's private key); a new
# named volume takes these directories' owner, so uid 10001 may write there.
COPY --from=builder /out/ /usr/local/bin/
COPY --from=healthprobe /go/bin/grpc-health-probe /usr/local/bin/grpc_health_probe
# Numeric ids so Kubernetes' runAsNonRoot can verify them without /etc/passwd.
USER 10001:10001
ENV RUST_LOG=info \
    QAPMAP_GRPC_HOST=0.0.0.0
EXPOSE 50051 50052 50053 50054
# The processes drain in-flight calls on SIGTERM (QAPMAP_SHUTDOWN_GRACE_MS).
STOPSIGNAL SIGTERM
CMD ["qapmap-equity"]
