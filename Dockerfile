# Builds the engine and client binaries; the image runs one engine shard.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY shared shared
COPY engine engine
COPY client client
RUN cargo build --release --locked --bin reddit-engine --bin reddit-client

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 reddit
COPY --from=build /src/target/release/reddit-engine /src/target/release/reddit-client /usr/local/bin/
USER reddit
ENTRYPOINT ["reddit-engine"]
