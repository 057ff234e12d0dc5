# Multi-stage build: compile both binaries, then ship them on a slim base.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin parley-api --bin parley-worker

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 parley && useradd --system --uid 10001 --gid 10001 --home /app parley && mkdir -p /app/data /media && chown parley /app/data /media
WORKDIR /app
COPY --from=build /src/target/release/parley-api /src/target/release/parley-worker /usr/local/bin/
# A numeric user, so that Kubernetes can check runAsNonRoot.
USER 10001:10001
ENV PARLEY_BIND=0.0.0.0:8080 PARLEY_LOG_FORMAT=json
EXPOSE 8080 9090
CMD ["parley-api"]
