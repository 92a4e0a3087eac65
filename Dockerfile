# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=docker
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/gitsec ./cmd/gitsec

FROM debian:bookworm-slim
# git is needed by the restore path and the bundle tools; CA certificates for Bitbucket and S3.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates wget \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/gitsec --create-home gitsec
COPY --from=build /out/gitsec /usr/local/bin/gitsec
USER gitsec
WORKDIR /var/lib/gitsec
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/gitsec"]
CMD ["api"]
