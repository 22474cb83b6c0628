# syntax=docker/dockerfile:1
# CloudOptim's container image: one static-ish Rust binary on distroless cc (glibc, libgcc_s, CA
# certificates, user 65532), nothing else: no shell, no package manager, nothing written at runtime.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg CLOUDOPTIM_COMMIT=$(git rev-parse HEAD) --build-arg VERSION=0.1.0 -t IMAGE .
#
# scripts/build-image.sh assembles the same image without a daemon from an already built binary and
# reads the final stage below (FROM, COPY destination, USER, ENTRYPOINT, LABEL keys and values) to
# do so, so keep that stage to those instructions; scripts/check-image.sh then inspects and runs it.
#
# Multi-arch: the build stage runs on the BUILD machine's architecture ($BUILDPLATFORM) and
# cross-compiles to $TARGETARCH with Debian's gcc cross toolchain as linker (and as C compiler for
# ring, the only C code in the tree). The alternative, one native build per arch under buildx's
# QEMU emulation, runs rustc emulated: roughly 5-10x slower for the arm64 half. The cross glibc
# (libc6-dev-<arch>-cross, bookworm: 2.36) is the same release as the runtime's (distroless
# debian12: 2.36), so the binary asks for no newer glibc symbols than the image has.

FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS build
ARG TARGETARCH
WORKDIR /src
RUN set -eux; \
    build_arch=$(dpkg --print-architecture); \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu; gcc=x86_64-linux-gnu; cross_pkgs="gcc-x86-64-linux-gnu libc6-dev-amd64-cross" ;; \
      arm64) triple=aarch64-unknown-linux-gnu; gcc=aarch64-linux-gnu; cross_pkgs="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;; \
      *) echo "unsupported TARGETARCH=$TARGETARCH (amd64, arm64)" >&2; exit 1 ;; \
    esac; \
    if [ "$build_arch" != "$TARGETARCH" ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends $cross_pkgs; \
      rm -rf /var/lib/apt/lists/*; \
      rustup target add "$triple"; \
    fi; \
    { echo "export CARGO_BUILD_TARGET=$triple"; \
      if [ "$build_arch" != "$TARGETARCH" ]; then \
        t=$(echo "$triple" | tr 'a-z-' 'A-Z_'); u=$(echo "$triple" | tr '-' '_'); \
        echo "export CARGO_TARGET_${t}_LINKER=$gcc-gcc CC_$u=$gcc-gcc AR_$u=$gcc-ar"; \
      fi; } > /cross-env.sh; \
    cat /cross-env.sh
COPY . .
# build.rs stamps the commit into `cloudoptim --version` and cloudoptim_build_info.
ARG CLOUDOPTIM_COMMIT=""
ENV CLOUDOPTIM_COMMIT=${CLOUDOPTIM_COMMIT}
RUN --mount=type=cache,id=cloudoptim-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=cloudoptim-target-${TARGETARCH},target=/src/target \
    set -eux; \
    . /cross-env.sh; \
    cargo build --release --locked --bin cloudoptim; \
    install -D -m 0755 "target/$CARGO_BUILD_TARGET/release/cloudoptim" /out/cloudoptim

FROM gcr.io/distroless/cc-debian12:nonroot
ARG CLOUDOPTIM_COMMIT=""
ARG VERSION=""
LABEL org.opencontainers.image.title="cloudoptim" \
      org.opencontainers.image.description="Kubernetes operator that runs AWS clusters on Spot capacity cheaply and safely" \
      org.opencontainers.image.source="https://github.com/cloudoptim/cloudoptim" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.revision="${CLOUDOPTIM_COMMIT}" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/cloudoptim /cloudoptim
USER 65532:65532
ENTRYPOINT ["/cloudoptim"]
