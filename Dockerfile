# The manager image for those with a Docker daemon (`docker build -t <img> .`).
# `make image` builds the same image without one, with ko; both run /manager
# as user 65532.

# Build the manager binary.
FROM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH

WORKDIR /workspace
# Dependencies first, so that a source change does not download them again.
# go.mod replaces the client module pkg/apikeyauth with its directory, which
# must hold its go.mod before anything is downloaded.
COPY go.mod go.sum ./
COPY pkg/apikeyauth/go.mod pkg/apikeyauth/go.mod
RUN go mod download

COPY api/ api/
COPY cmd/main.go cmd/main.go
COPY internal/ internal/
COPY pkg/ pkg/

# No cgo: the runtime image has no libc. GOARCH follows the target platform of
# `docker buildx build --platform`, and the host's when there is none.
RUN CGO_ENABLED=0 GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} go build -trimpath -ldflags="-s -w" -o manager cmd/main.go

# distroless/static holds CA certificates, tzdata and a nonroot user, nothing
# else: https://github.com/GoogleContainerTools/distroless
FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /workspace/manager .
USER 65532:65532

ENTRYPOINT ["/manager"]
