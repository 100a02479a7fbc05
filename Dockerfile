# connect-payg as a DevOps extension container.
# Build:  docker build -t connect-payg .
# Run:    docker run -e API_KEY='ApiKey SU-…:…' -e ENVIRONMENT_ID=ENV-… connect-payg

FROM rust:1-slim-bookworm AS build
# jemalloc (src/allocator.rs) is built from source with make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
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
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin payg
COPY --from=build /src/target/release/connect-payg /usr/local/bin/connect-payg
USER 10001
ENV LOG_FORMAT=json
ENTRYPOINT ["connect-payg", "run"]
