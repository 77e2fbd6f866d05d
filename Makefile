# Developer and CI entry points. `make test` is the test command the README
# names; .ci/run calls it after installing the external tools the tests use.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

GO ?= go
# Extra flags for the main `go test` run, e.g. GOTESTFLAGS='-p 2 -v'.
GOTESTFLAGS ?=
# How long each Fuzz target runs in `make fuzz` (part of `make test`).
FUZZTIME ?= 20s

.PHONY: all generate build man demo restic rest-server release test test-all test-short fuzz vet fmt

all: build

# puller/internal/restic is generated from the module cache (gitignored);
# everything that compiles the puller needs it.
generate:
	$(GO) generate ./...

build: generate
	mkdir -p bin
	$(GO) build -o bin/ ./...

# haul's man page and shell completions, generated from its command line.
man: build
	mkdir -p bin/share/man/man1 bin/share/completions
	bin/haul man > bin/share/man/man1/haul.1
	for s in bash zsh fish; do bin/haul completion $$s > bin/share/completions/haul.$$s; done

# The README's first command: build, then the whole backup path on a
# generated Pangolin-like dir (backup, change, backup, restore, verify).
demo: build
	bin/haul demo

# The README's second command: every test with the real components. As root
# on Debian .ci/tools installs what is missing (as .ci/run does); elsewhere it
# says what is missing, and `make test` counts the tests that skipped.
test-all: build
	.ci/tools
	HAUL_BIN_DIR=$(CURDIR)/bin HAUL_RESTIC=$(CURDIR)/bin/restic HAUL_REST_SERVER=$(CURDIR)/bin/rest-server \
		$(MAKE) --no-print-directory test

# The reference restic CLI, at the version go.mod's tool directive pins.
restic: bin/restic

bin/restic: go.mod go.sum
	mkdir -p bin
	$(GO) build -o bin/restic github.com/restic/restic/cmd/restic

# Static release binaries (no cgo, so they run on TrueNAS, NixOS and any
# Linux) for amd64 and arm64, stamped with the version git describes, and
# their SHA256SUMS. make release VERSION=v1.2.3 DIST=dir to override.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
DIST ?= dist
RELEASE_LDFLAGS = -s -w -X github.com/haulproject/haul/internal/version.Version=$(VERSION)

release: generate
	rm -rf $(DIST) && mkdir -p $(DIST)
	for arch in amd64 arm64; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(RELEASE_LDFLAGS)' \
			-o $(DIST)/haul-$(VERSION)-linux-$$arch ./puller/cmd/haul; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '$(RELEASE_LDFLAGS)' \
			-o $(DIST)/haul-agent-$(VERSION)-linux-$$arch ./agent/cmd/haul-agent; \
	done
	cd $(DIST) && sha256sum haul-* > SHA256SUMS && cat SHA256SUMS

# restic's rest-server, pinned the same way: haul copy's tests run it
# --append-only on loopback.
rest-server: bin/rest-server

bin/rest-server: go.mod go.sum
	mkdir -p bin
	$(GO) build -o bin/rest-server github.com/restic/rest-server/cmd/rest-server

# Every package, unit and integration, under the race detector.
test: generate
	@report=$$(mktemp); rc=0; \
	HAUL_SKIP_REPORT=$$report $(GO) test -race -count=1 -timeout 45m $(GOTESTFLAGS) ./... || rc=$$?; \
	.ci/skip-summary "$$report"; rm -f "$$report"; exit $$rc
	$(MAKE) --no-print-directory fuzz

# The edit-test loop: unit packages only (not test/, which starts sshd,
# dockerd and nix, nor the benchmarks), cached results reused, -short (the
# slowest end-to-end cases run only in make test). The binaries are built
# once here instead of once per test package (HAUL_BIN_DIR).
UNIT_PKGS = $$($(GO) list ./... | grep -v -e '/test/' -e '/bench')
test-short: build
	HAUL_BIN_DIR=$(CURDIR)/bin $(GO) test -short -timeout 10m $(GOTESTFLAGS) $(UNIT_PKGS)

# Runs every Fuzz target in the module for $(FUZZTIME), one at a time (go test
# -fuzz takes one target in one package). Targets are discovered with
# `go test -list`, so new ones are picked up without editing this file.
# .ci/fuzz-target tells a finding from Go 1.26's fuzztime-boundary race.
fuzz:
	@targets=$$($(GO) test -list '^Fuzz' ./... | \
		awk '$$1 ~ /^Fuzz/ { n[++c] = $$1; next } $$1 == "ok" { for (i = 1; i <= c; i++) print $$2, n[i]; c = 0 }'); \
	if [[ -z "$$targets" ]]; then echo "fuzz: no Fuzz targets"; exit 0; fi; \
	while read -r pkg name; do \
		echo "fuzz: $$pkg $$name for $(FUZZTIME)"; \
		.ci/fuzz-target $(GO) "$$pkg" "$$name" $(FUZZTIME); \
	done <<< "$$targets"

vet: generate
	$(GO) vet ./...

# Fails listing the files gofmt would change (the generated restic copy is
# not checked). Fix with: gofmt -w <files>
fmt:
	@files=$$(find . -path ./puller/internal/restic -prune -o -path ./.git -prune -o -path ./bin -prune \
		-o -name '*.go' -print | xargs -r gofmt -l); \
	if [[ -n "$$files" ]]; then echo "gofmt: these files need formatting (gofmt -w):"; echo "$$files"; exit 1; fi
