# OneProtect Telemetry. `make run` serves on the embedded SQLite default; `make test` runs
# every test (on PostgreSQL too when ONEPROTECT_TEST_POSTGRES is set).
GO ?= go
BIN := bin/oneprotect

.PHONY: build run demo test test-short generate vet bench clean api-check

# The commit and version go into `oneprotect version` even where VCS stamping is off.
LDFLAGS := -X main.commit=$(shell git rev-parse HEAD 2>/dev/null) -X main.version=$(shell git describe --tags --always --dirty 2>/dev/null)

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) .

run:
	$(GO) run . serve

demo:
	$(GO) run . serve --demo --db demo.db $(if $(ADDR),--addr $(ADDR))

test:
	$(GO) test -race -count=1 -timeout 30m ./...

test-short:
	$(GO) test -count=1 ./...

generate:
	$(GO) tool gqlgen generate

# OpenAPI lint and breaking-change checks against api/baseline/ (needs npx).
api-check:
	.ci/api-check

vet:
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin
