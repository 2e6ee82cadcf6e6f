# Builds the engine, client, HTTP gateway and chat gateway binaries; the image
# runs one engine shard by default (the gateway and chat services override the
# entrypoint).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock clippy.toml ./
COPY shared shared
COPY engine engine
COPY client client
COPY gateway gateway
COPY chat chat
RUN cargo build --release --locked --bin reddit-engine --bin reddit-client --bin reddit-gateway \
    --bin reddit-chat

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 reddit
COPY --from=build /src/target/release/reddit-engine /src/target/release/reddit-client \
     /src/target/release/reddit-gateway /src/target/release/reddit-chat /usr/local/bin/
USER reddit
ENTRYPOINT ["reddit-engine"]
