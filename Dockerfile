# syntax=docker/dockerfile:1
# Build:  docker build -t fhirgate:dev .
# Run:    docker run --rm -p 127.0.0.1:8080:8080 -e DATABASE_URL=postgres://... fhirgate:dev
# The image has no PostgreSQL of its own: DATABASE_URL is required.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/fhirgate ./cmd/fhirgate

# distroless/static: no shell, no package manager, CA certificates and
# tzdata only; the nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/fhirgate /fhirgate
COPY --from=build /src/mappings /mappings
COPY --from=build /src/policies /policies
USER 65532:65532
ENV FHIRGATE_MAPPINGS=/mappings FHIRGATE_PHI_POLICY=/policies/phi.yaml FHIRGATE_DATA_DIR=/data
# Inside the container the gateway must listen beyond loopback for the
# published port to reach it; publish it on the host's loopback unless TLS
# is in front.
ENV FHIRGATE_ADDR=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/fhirgate"]
CMD ["serve"]
