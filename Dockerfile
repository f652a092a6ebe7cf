# tandem in a container, for replay shards on Kubernetes (deploy/k8s/).
#   deploy/build-image       (buildah; or podman build -t registry.example/tandem:latest .,
#                             docker build)
# Stage 1 builds the binary; stage 2 is a slim Debian runtime with libpcap,
# a non-root user, and tandem as PID 1: SIGTERM (a preempted or deleted pod)
# reaches it directly, and it stops the replay, drains what is in flight and
# writes its report before it exits (exit 3: interrupted).

# The base images, as build arguments so that a machine that cannot reach
# docker.io builds FROM its own (deploy/build-image --local-bases).
ARG BUILD_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcap-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tandem

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpcap0.8 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /data tandem
COPY --from=build /src/target/release/tandem /usr/local/bin/tandem
USER 10001:10001
WORKDIR /data
# Exec form: tandem itself is PID 1, not a shell that would swallow SIGTERM.
ENTRYPOINT ["/usr/local/bin/tandem"]
CMD ["--help"]
