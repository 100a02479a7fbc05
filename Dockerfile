# connect-payg as a DevOps extension container.
# Build:  docker build -t connect-payg .
# Run:    docker run -e API_KEY='ApiKey SU-…:…' -e ENVIRONMENT_ID=ENV-… connect-payg
# Any subcommand works too: docker run -v "$PWD/out:/work/out" -e … connect-payg report --out out

FROM rust:1-slim-bookworm AS build
# jemalloc (src/allocator.rs) is built from source with make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
# The image carries no symbols: a smaller binary (backtraces still name the panic site).
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
WORKDIR /src
# Dependencies first, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin && echo 'fn main() {}' > src/main.rs && echo 'fn main() {}' > src/bin/bench.rs \
    && touch src/lib.rs && cargo build --release --locked --bin connect-payg && rm -rf src
COPY . .
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin connect-payg

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin payg \
    && mkdir -p /work \
    && chown 10001:10001 /work \
    && chmod 0700 /work
COPY --from=build /src/target/release/connect-payg /usr/local/bin/connect-payg
USER 10001
# Reports, workbooks and bad-records files land here: writable by the non-root user.
WORKDIR /work
ENV LOG_FORMAT=json
# /healthz and /metrics for the health check below and for Prometheus (`run` only; publish the
# port to scrape it). Setting METRICS_ADDRESS empty turns both off: then run with
# --no-healthcheck, and one-off commands (`report`, `validate`) likewise.
ENV METRICS_ADDRESS=0.0.0.0:9464
EXPOSE 9464
# Healthy while the background websocket is connected (or was within the last 60 s); no curl
# needed in the image.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["connect-payg", "health"]
# The subcommand is the container's command: `run` by default, any other when given.
ENTRYPOINT ["connect-payg"]
CMD ["run"]
