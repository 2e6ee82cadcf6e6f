# Builds the engine, client and gateway binaries; the image runs one engine shard
# by default (the gateway service overrides the entrypoint).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY shared shared
COPY engine engine
COPY client client
COPY gateway gateway
RUN cargo build --release --locked --bin reddit-engine --bin reddit-client --bin reddit-gateway

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 reddit
COPY --from=build /src/target/release/reddit-engine /src/target/release/reddit-client \
     /src/target/release/reddit-gateway /usr/local/bin/
USER reddit
ENTRYPOINT ["reddit-engine"]
