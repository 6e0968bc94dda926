# fhirgate developer targets. The two that matter:
#   make run    start the gateway on http://127.0.0.1:8080/fhir (no configuration needed)
#   make test   vet, gofmt check, and every test against a real PostgreSQL

SHELL := /bin/bash
GO    ?= go

# Where the private dev PostgreSQL cluster lives when no server answers on
# 127.0.0.1:5432 (see internal/database/devpg.go). Git-ignored.
DEV_DATA ?= .data/pg

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

TEST_TIMEOUT ?= 20m
FUZZ_TIME    ?= 15s

# The bench target starts its own gateway on this address so it never
# collides with a `make run` on 8080.
BENCH_ADDR  ?= 127.0.0.1:18080
BENCH_FLAGS ?= -resources 250000 -duration 30s

.PHONY: all run build test lint fuzz generate bench bench-security devdb devdb-stop clean vault e2e-mllp

all: lint build

run:
	$(GO) run ./cmd/fhirgate serve

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/fhirgate ./cmd/fhirgate

lint:
	$(GO) vet ./...
	@unformatted=$$(find . -path ./.data -prune -o -path ./.git -prune -o -name '*.go' -print | xargs gofmt -l); \
	if [ -n "$$unformatted" ]; then echo "gofmt: these files need formatting (run gofmt -w):"; echo "$$unformatted"; exit 1; fi

# Tests need a PostgreSQL. The test harness uses TEST_DATABASE_URL, else
# DATABASE_URL, else 127.0.0.1:5432. With neither variable set, devdb finds
# the server on 5432 or starts (or reuses) the private cluster in DEV_DATA
# and prints its URL, which becomes TEST_DATABASE_URL.
test: lint vault
	@set -euo pipefail; \
	if [ -z "$${TEST_DATABASE_URL:-}" ] && [ -z "$${DATABASE_URL:-}" ]; then \
		TEST_DATABASE_URL=$$($(GO) run ./internal/database/cmd/devdb -dir $(DEV_DATA)); \
		export TEST_DATABASE_URL; \
		echo "make test: TEST_DATABASE_URL=$$TEST_DATABASE_URL"; \
	fi; \
	$(GO) test -count=1 -p 2 -timeout $(TEST_TIMEOUT) ./...

# The Vault dev server the key-provider and PHI tests run against: an
# unmodified HashiCorp Vault built from the Go module proxy by the separate
# module in deploy/devvault, into .data/bin/vault, once (reused while that
# module is unchanged). Cold: ~15 minutes on 2 cores; warm cache: <2.
vault:
	@./deploy/devvault/build.sh >/dev/null

# Authentication, OPA and the durable access log on versus off
# (FHIRGATE_SECURITY=off), each over a fresh database on the PostgreSQL at
# 127.0.0.1:5432, alternating ROUNDS times; prints the bench tool's report
# with the server's policy-decision latency and audit records per commit.
bench-security: build
	ROUNDS=$${ROUNDS:-3} RES=$${RES:-30000} DUR=$${DUR:-20s} ./internal/bench/security-compare.sh

# Every fuzz target in the repository, FUZZ_TIME each.
fuzz:
	@set -euo pipefail; \
	grep -rlE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*\(' . | grep -v '^./.data/' | while read -r f; do \
		dir=$$(dirname "$$f"); \
		for fn in $$(grep -oE '^func Fuzz[A-Za-z0-9_]*' "$$f" | cut -d' ' -f2); do \
			echo "fuzz: $$dir $$fn ($(FUZZ_TIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZ_TIME) -fuzzminimizetime 5s "$$dir"; \
		done; \
	done

generate:
	$(GO) generate ./...

# Start a gateway on BENCH_ADDR (dev database default), run the load
# generator against it, stop the gateway. Override BENCH_FLAGS for a shorter
# run, e.g. make bench BENCH_FLAGS='-resources 30000 -duration 10s'.
bench: build
	@set -euo pipefail; mkdir -p .data; \
	FHIRGATE_ADDR=$(BENCH_ADDR) ./bin/fhirgate serve > .data/bench-serve.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null || true; wait $$pid 2>/dev/null || true' EXIT; \
	addr=$(BENCH_ADDR); host=$${addr%:*}; port=$${addr##*:}; \
	for i in $$(seq 1 120); do \
		if (exec 3<>/dev/tcp/$$host/$$port) 2>/dev/null; then break; fi; \
		if ! kill -0 $$pid 2>/dev/null; then echo "bench: gateway exited; see .data/bench-serve.log"; exit 1; fi; \
		sleep 0.5; \
	done; \
	echo "bench: gateway on $(BENCH_ADDR) (log: .data/bench-serve.log)"; \
	./bin/fhirgate bench -url http://$(BENCH_ADDR)/fhir -token "$$(./bin/fhirgate token -sub bench -scope 'system/*.cruds')" $(BENCH_FLAGS)

# Send every corpus message to a running gateway's MLLP listener (make run
# in another terminal) with a third-party client, @medplum/hl7 from npm, and
# re-send one: prints the ACK codes and whether the re-send got the same ACK.
MLLP_ADDR ?= 127.0.0.1:2575
e2e-mllp:
	cd deploy/e2e/mllp && npm install --no-audit --no-fund --silent && \
	node send.mjs $(firstword $(subst :, ,$(MLLP_ADDR))) $(lastword $(subst :, ,$(MLLP_ADDR))) $(CURDIR)/../shared/corpus/hl7v2/messages

# Print the dev database URL (starting the private cluster if needed), or
# stop the private cluster.
devdb:
	@$(GO) run ./internal/database/cmd/devdb -dir $(DEV_DATA)

devdb-stop:
	$(GO) run ./internal/database/cmd/devdb -dir $(DEV_DATA) -stop

clean:
	-@[ -d $(DEV_DATA) ] && $(GO) run ./internal/database/cmd/devdb -dir $(DEV_DATA) -stop || true
	rm -rf bin .data
