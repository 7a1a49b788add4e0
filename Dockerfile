# Build
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && strip target/release/switchboard

# Run
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/switchboard switchboard \
    && mkdir -p /var/lib/switchboard && chown switchboard /var/lib/switchboard
COPY --from=build /src/target/release/switchboard /usr/local/bin/switchboard
USER switchboard
WORKDIR /var/lib/switchboard
ENV SWITCHBOARD_DATA_DIR=/var/lib/switchboard \
    SWITCHBOARD_HTTP_LISTEN=0.0.0.0:8080 \
    SWITCHBOARD_SIP_LISTEN=udp:0.0.0.0:5060,tcp:0.0.0.0:5060
EXPOSE 5060/udp 5060/tcp 8080/tcp
ENTRYPOINT ["switchboard"]
CMD ["serve"]
