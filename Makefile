# kpiflow: `make test` and `make demo` do all set-up themselves (Debian packages, npm ci, builds).
SHELL := /bin/bash
.DELETE_ON_ERROR:
.DEFAULT_GOAL := build

# Third-party peers the tests talk to: tshark, libfixbuf's ipfixDump, softflowd, nfdump (nfcapd), pmacct,
# and python3-ipfix's copy of the IANA element registry.
DEB_PACKAGES := tshark libfixbuf-tools softflowd nfdump pmacct python3-ipfix
STAMP := .make
TS_SOURCES := $(shell find ipfix cli test bench agent collector native -name '*.ts' 2>/dev/null)

.PHONY: build test demo deps lint typecheck bench bench-queries fuzz clean

$(STAMP)/deb: Makefile scripts/ensure-debs.sh
	@mkdir -p $(STAMP)
	@scripts/ensure-debs.sh $(DEB_PACKAGES)
	@touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

dist/.built: node_modules/.package-lock.json tsconfig.json $(TS_SOURCES)
	npx tsc -p tsconfig.json
	@touch $@

deps: $(STAMP)/deb node_modules/.package-lock.json

build: dist/.built

test: deps build
	npx biome check .
	node scripts/run-tests.mjs

demo: deps build
	node dist/cli/kpiflow.js demo

lint: node_modules/.package-lock.json
	npx biome check .

typecheck: node_modules/.package-lock.json
	npx tsc -p tsconfig.json --noEmit

bench: deps build
	node dist/bench/ipfix-codec.js
	node dist/bench/collector-ingest.js

# Fills a database with 10 M profiles first (several minutes), then times API queries.
bench-queries: deps build
	node dist/bench/collector-queries.js

fuzz: build
	node dist/test/ipfix/fuzz-long.js

clean:
	rm -rf dist $(STAMP)
