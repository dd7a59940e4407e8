# syntax=docker/dockerfile:1
# One image for every target: `docker run agora run --target response`, and so on.
#
#   docker build -t agora .
#
# The build stage is Debian bookworm, like the runtime, so the binary's glibc matches.
# The runtime is distroless: glibc, libgcc, CA certificates, no shell and no package manager;
# the binary probes its own health (`agora health`), so no curl is needed either.

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so that a change to Agora's code rebuilds only Agora's crates.
COPY Cargo.toml Cargo.lock ./
COPY libs libs
COPY services services
COPY proto proto
COPY tests-integration tests-integration
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p agora \
 && install -D -m 0755 target/release/agora /out/agora \
 && install -d -m 0755 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="Agora" \
      org.opencontainers.image.description="The digital hearing portal: any target of the agora binary" \
      org.opencontainers.image.licenses="MPL-2.0"
COPY --from=build /out/agora /usr/local/bin/agora
# The embedded mode's data directory; in the distributed mode nothing is written locally.
COPY --from=build --chown=65532:65532 /out/data /var/lib/agora
# distroless' "nonroot" user; Kubernetes' runAsNonRoot needs it numeric.
USER 65532:65532
WORKDIR /var/lib/agora
ENV AGORA_DATA_DIR=/var/lib/agora \
    AGORA_GRPC_ADDR=0.0.0.0:50051 \
    AGORA_HTTP_ADDR=0.0.0.0:8080 \
    AGORA_LOG_FORMAT=json
EXPOSE 8080 50051
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/agora", "health"]
ENTRYPOINT ["/usr/local/bin/agora"]
CMD ["run"]
