# Passerelle hub image: a static-ish Go binary built with cgo (SQLite, goolm) on Debian, run on Debian slim.
# Build: docker build -t passerelle .   (docker-compose.yml does this for you)

FROM golang:1.26-bookworm AS build
WORKDIR /src
# Dependencies first, so code changes do not re-download modules.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=docker
RUN CGO_ENABLED=1 go build -tags goolm -trimpath -ldflags "-X main.version=${VERSION}" \
    -o /out/passerelle ./cmd/passerelle

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --home-dir /data --shell /usr/sbin/nologin passerelle \
    && mkdir -p /data \
    && chown passerelle:passerelle /data
COPY --from=build /out/passerelle /usr/local/bin/passerelle
USER passerelle
WORKDIR /data
VOLUME /data
EXPOSE 8008
ENTRYPOINT ["passerelle"]
# Without a mounted config, the first start writes /data/passerelle.yaml with defaults (listening on
# 127.0.0.1 inside the container, so mount a config like configs/docker.yaml to reach it from outside).
CMD ["serve", "-c", "/data/passerelle.yaml"]
