# GitSec — the two commands that matter: `make dev` and `make test`.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
GO_FILES = $(shell git ls-files --cached --others --exclude-standard '*.go')

.PHONY: all build tools dev test lint vet fmt-check workflow-purity bench bench-go clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/gitsec ./cmd/gitsec

# Temporal CLI and versitygw are built once per version and cached in ~/.cache/gitsec/bin.
tools:
	bash scripts/install-tools.sh

# The whole local stack in one foreground process; Ctrl-C stops everything.
dev: build
	bash scripts/install-tools.sh --dev-only
	./bin/gitsec dev

fmt-check:
	@out=$$(gofmt -l $(GO_FILES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Workflow code must stay deterministic: no database, HTTP, git or storage imports.
workflow-purity:
	@bad=$$(grep -lE '"(github.com/jackc/pgx[^"]*|net/http|github.com/go-git/go-git[^"]*|gocloud.dev[^"]*)"' workflows/*.go | grep -v _test.go || true); \
	if [ -n "$$bad" ]; then echo "workflow files import I/O packages: $$bad"; exit 1; fi

lint: fmt-check vet workflow-purity

test: tools lint
	$(GO) test -race -timeout 25m ./...

# The benchmark driver: every workload beside its stock-git baseline on the real local stack;
# writes docs/benchmarks.md and bench-results.json. QUICK=1 scales it down to a few minutes,
# PROFILE=1 writes CPU and heap profiles of the GitSec side to .bench-profiles/, and
# GITSEC_BENCH_REPO=/path/to/bare.git imports a real repository as the medium one.
bench: tools build
	./bin/gitsec bench $(if $(QUICK),--quick) $(if $(PROFILE),--profile .bench-profiles)

# The Go benchmarks of single components (webhook receiver burst, push to snapshot through
# the webhook path, consolidation by git pack-objects against go-git's encoder, bytes stored
# after 30 daily snapshots with and without consolidation; the last two need
# GITSEC_BENCH_REPO=/path/to/bare.git, a real history).
bench-go: tools
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./...

clean:
	rm -rf bin
