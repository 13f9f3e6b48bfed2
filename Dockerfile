# syntax=docker/dockerfile:1
# Build: docker build --build-arg VERSION=$(git describe --always --dirty) -t sluice .
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ... (the
# build stage runs natively and cross-compiles; no emulation).
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
# Module downloads get their own layer: it changes only with go.mod/go.sum.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS TARGETARCH
# Static (CGO_ENABLED=0), reproducible paths (-trimpath), no symbol tables
# (-s -w), the version in main.version (cmd/sluice/main.go). The build cache
# mount keeps rebuilds incremental without putting the cache in a layer.
RUN --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sluice ./cmd/sluice

# No shell, no package manager, CA certificates and tzdata included.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.source="https://github.com/sluice-dev/sluice" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /out/sluice /sluice
# distroless's nonroot user, by number: Kubernetes can verify runAsNonRoot
# only for a numeric USER.
USER 65532:65532
# The ops endpoint (SLUICE_HTTP_ADDR): /livez, /readyz, /metrics.
EXPOSE 8080
ENTRYPOINT ["/sluice"]
CMD ["consume"]
