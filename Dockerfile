# syntax=docker/dockerfile:1
# Build: docker build --build-arg VERSION=$(git describe --always) -t sluice .
FROM golang:1.26 AS build
WORKDIR /src
# Module downloads get their own layer: it changes only with go.mod/go.sum.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sluice ./cmd/sluice

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice /sluice
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/sluice"]
CMD ["consume"]
