# pgcdc container image, used by docker-compose.yml.
FROM rust:1.88-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      cmake libcurl4-openssl-dev libsasl2-dev libssl-dev libzstd-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY bench bench
COPY tests tests
RUN cargo build --release --locked --bin pgcdc

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      ca-certificates curl libcurl4 libsasl2-2 libssl3 libzstd1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app pgcdc
WORKDIR /app
COPY --from=build /src/target/release/pgcdc /usr/local/bin/pgcdc
COPY config config
COPY connectors connectors
USER pgcdc
ENV PGCDC_HTTP_LISTEN=0.0.0.0:8686
EXPOSE 8686
ENTRYPOINT ["pgcdc"]
CMD ["run"]
