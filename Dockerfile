# syntax=docker/dockerfile:1
# One image with the four service binaries; docker-compose.yml picks one per container.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# gcc (already in the image) builds ring and the bundled SQLite; nothing needs OpenSSL.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin user-service --bin outbox-relay --bin email-service \
      --bin webhook-service \
 && mkdir -p /out \
 && cp target/release/user-service target/release/outbox-relay target/release/email-service \
      target/release/webhook-service /out/

FROM debian:bookworm-slim AS runtime
# curl only for the compose health checks; ca-certificates for smtps:// and amqps://.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --create-home app
COPY --from=build /out/ /usr/local/bin/
USER app
WORKDIR /app
ENV LOG_FORMAT=json
CMD ["user-service"]
