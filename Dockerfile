# syntax=docker/dockerfile:1
# Build stage: the same release script developers run (scripts/release-build).
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN scripts/release-build /out

# Runtime stage: slim Debian, non-root, no shell tools needed (the health check is the binary itself).
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin acp
COPY --from=builder /out/acp-merchant /usr/local/bin/acp-merchant
USER 10001:10001
# Listen on all interfaces inside the container. Plain HTTP on a non-loopback address is refused in production
# unless ACP_TLS_TERMINATED_BY_PROXY=true says a TLS-terminating proxy sits in front (see README, Deploy).
ENV ACP_LISTEN_ADDR=0.0.0.0:8080 \
    ACP_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["acp-merchant", "healthcheck"]
ENTRYPOINT ["acp-merchant"]
CMD ["serve"]
