# kpiflow: `make test` and `make demo` do all set-up themselves (Debian packages, npm ci, builds).
SHELL := /bin/bash
.DELETE_ON_ERROR:
.DEFAULT_GOAL := build

# Every tool a test requires (requireTools/hasTool) has its package here, and every package here is
# used: test/packaging/make-packages.test.ts checks both, with dpkg as the judge of who ships what.
# Third-party peers the tests talk to: tshark (and wireshark-common's mergecap), tcpdump, libfixbuf's
# ipfixDump, softflowd, nfdump (nfcapd), pmacct, openssl (test certificates), curl, and
# python3-ipfix's copy of the IANA element registry.
DEB_PACKAGES := tshark wireshark-common tcpdump libfixbuf-tools softflowd nfdump pmacct openssl curl \
	python3-ipfix
# The kernel side: clang and bpftool build the CO-RE probes, libbpf (with libelf, zlib) links the
# native addon, g++/make/python3 run node-gyp, nftables/iproute2/util-linux (nsenter, unshare,
# setpriv) build the test hosts.
DEB_PACKAGES += clang libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config g++ make python3 \
	iproute2 nftables util-linux clang-format
# The overhead benchmark's bulk workload (bench/agent-overhead.ts).
DEB_PACKAGES += iperf3
# Packaging checks (test/packaging): systemd-analyze verify on the units, systemd-nspawn to boot a
# systemd that runs them (this machine's PID 1 is not systemd), docker-compose config on
# docker-compose.yml (no Docker engine needed for that).
DEB_PACKAGES += systemd systemd-container docker-compose
# Prometheus (Debian's) scrapes the collector in the dashboard test: every PromQL panel must return data.
DEB_PACKAGES += prometheus
# The ClickHouse store's tests and benchmark start Debian's clickhouse-server (18.16) on loopback.
DEB_PACKAGES += clickhouse-server
STAMP := .make
TS_SOURCES := $(shell find ipfix cli test bench agent collector native demo -name '*.ts' 2>/dev/null)

.PHONY: build test demo deps lint typecheck bench bench-queries fuzz clean lint-c

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

# CO-RE probes: one object per probes/*.bpf.c, all in one build folder, against this kernel's BTF.
BPF_BUILD := build/probes
BPF_OBJS := $(patsubst probes/%.bpf.c,$(BPF_BUILD)/%.bpf.o,$(wildcard probes/*.bpf.c))
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror -I$(BPF_BUILD) -Iprobes

$(BPF_BUILD)/vmlinux.h: | $(STAMP)/deb
	@mkdir -p $(@D)
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $@

$(BPF_BUILD)/%.bpf.o: probes/%.bpf.c $(wildcard probes/*.h) $(BPF_BUILD)/vmlinux.h
	clang $(BPF_CFLAGS) -c $< -o $@

# C style: the kernel's for the probes (probes/.clang-format).
lint-c: $(STAMP)/deb
	clang-format --dry-run --Werror probes/*.bpf.c probes/*.h

# The N-API addon over the system libbpf, built by node-gyp against the installed node's headers
# (no header download: the network allows none).
NATIVE_ADDON := native/build/Release/kpiflow_bpf.node
NODE_DIR = $(shell node -p "require('node:path').resolve(process.execPath, '../..')")

$(NATIVE_ADDON): native/binding.gyp $(wildcard native/src/*) node_modules/.package-lock.json | $(STAMP)/deb
	node node_modules/node-gyp/bin/node-gyp.js rebuild --directory=native --nodedir=$(NODE_DIR) --loglevel=warn

deps: $(STAMP)/deb node_modules/.package-lock.json

build: dist/.built $(BPF_OBJS) $(NATIVE_ADDON)

# Supported Node.js: 22 and 24 (20, end-of-life since April 2026, still works). The whole suite runs
# on the machine's node; the codec, collector, replay, CLI, agent pipeline and native addon tests
# run again on Node.js 24 (official build from the npm registry, native modules built for it);
# the live probe, demo and packaging tests once are enough. `make test-node NODE_VERSION=22.23.5`
# runs the same subset on another version. Left out there: the comparisons with tshark over the
# third-party fixtures (minutes spent in tshark; golden and fuzz tests cover the decoders on 24).
NODE_VERSION ?= 24.22.3
NODE_TESTS := dist/test/ipfix/ dist/test/collector/ dist/test/replay/ dist/test/cli/ dist/test/agent/ \
	dist/test/native/ dist/test/demo/demo-replay '!dist/test/replay/live-capture' \
	'!dist/test/ipfix/interop-fixtures' '!dist/test/replay/fixtures-vs-tshark'

# Both runs happen even when the first fails (one CI run shows every failure); either failing fails.
test: deps build
	npx biome check .
	node scripts/run-tests.mjs; first=$$?; \
		scripts/test-on-node.sh $(NODE_VERSION) $(NODE_TESTS) && exit $$first

.PHONY: test-node
test-node: deps build
	scripts/test-on-node.sh $(NODE_VERSION) $(NODE_TESTS)

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

# The ClickHouse store (a temporary clickhouse-server 18.16 on loopback) against SQLite (blocks) in the
# same run: ingest records/s at the same offered rates, with the backlog each collector held at the end
# of each step; then both filled with the same 10 M profiles (tens of minutes) and API query p50/p95.
# Arguments: INGEST_ARGS (e.g. --rates 25000,50000) and QUERY_ARGS (e.g. --profiles 1000000).
.PHONY: bench-clickhouse
bench-clickhouse: deps build
	node dist/bench/collector-ingest.js --stores sqlite,clickhouse --layouts blocks $(INGEST_ARGS)
	node dist/bench/collector-queries.js --stores sqlite,clickhouse --layout blocks $(QUERY_ARGS)

# What monitoring costs the host (as root: namespaces, probes): no probes vs kpiflow vs per-packet.
.PHONY: bench-agent
bench-agent: deps build
	node dist/bench/agent-overhead.js $(BENCH_ARGS)

fuzz: build
	node dist/test/ipfix/fuzz-long.js

clean:
	rm -rf dist $(STAMP) build native/build

# Installs the built tree under $(LIBDIR) (dist, production node_modules, the native addon, the
# probes object), the `kpiflow` wrapper in $(BINDIR), the systemd units, and example configs in
# $(SYSCONFDIR)/kpiflow (never overwriting existing ones). PREFIX and DESTDIR as usual; docs/deploy.md.
PREFIX ?= /usr
BINDIR ?= $(PREFIX)/bin
LIBDIR := $(PREFIX)/lib/kpiflow
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
UNITDIR ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/systemd/system,$(PREFIX)/lib/systemd/system)
NODE ?= $(shell command -v node)
UNITS := kpiflow-collector.service kpiflow-agent.service
SUBST = sed -e 's|@bindir@|$(BINDIR)|g' -e 's|@sysconfdir@|$(SYSCONFDIR)|g' -e 's|@node@|$(NODE)|g'

.PHONY: install uninstall
install: build
	@test -n "$(NODE)" || { echo "kpiflow: node not found (set NODE=/path/to/node)" >&2; exit 1; }
	@major=$$($(NODE) -p 'process.versions.node.split(".")[0]'); test "$$major" -ge 22 || \
		echo "kpiflow: warning: $(NODE) is Node.js $$major, past its end of life; kpiflow supports 22 and 24" >&2
	rm -rf $(DESTDIR)$(LIBDIR)
	install -d $(DESTDIR)$(LIBDIR)/build/probes $(DESTDIR)$(LIBDIR)/native/build/Release \
		$(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/kpiflow
	cp -a dist package.json package-lock.json $(DESTDIR)$(LIBDIR)/
	rm -rf $(DESTDIR)$(LIBDIR)/dist/test $(DESTDIR)$(LIBDIR)/dist/bench $(DESTDIR)$(LIBDIR)/dist/.built
	install -m 644 $(BPF_BUILD)/kpiflow.bpf.o $(DESTDIR)$(LIBDIR)/build/probes/
	install -m 755 $(NATIVE_ADDON) $(DESTDIR)$(LIBDIR)/native/build/Release/
	# Production dependencies: a copy of node_modules pruned offline (better-sqlite3 stays built).
	cp -a node_modules $(DESTDIR)$(LIBDIR)/
	cd $(DESTDIR)$(LIBDIR) && npm prune --omit=dev --no-audit --no-fund --ignore-scripts --loglevel=error
	find $(DESTDIR)$(LIBDIR)/node_modules -depth -type d -empty -delete
	$(SUBST) packaging/kpiflow.sh > $(DESTDIR)$(BINDIR)/kpiflow && chmod 755 $(DESTDIR)$(BINDIR)/kpiflow
	for u in $(UNITS); do \
		$(SUBST) packaging/systemd/$$u.in > $(DESTDIR)$(UNITDIR)/$$u && chmod 644 $(DESTDIR)$(UNITDIR)/$$u; done
	for c in collector agent; do \
		test -e $(DESTDIR)$(SYSCONFDIR)/kpiflow/$$c.json || \
			install -m 644 packaging/config/$$c.json $(DESTDIR)$(SYSCONFDIR)/kpiflow/$$c.json; done
	@echo "kpiflow installed in $(DESTDIR)$(LIBDIR); then: systemctl daemon-reload && systemctl enable --now kpiflow-collector kpiflow-agent"

uninstall:
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR)/kpiflow
	for u in $(UNITS); do rm -f $(DESTDIR)$(UNITDIR)/$$u; done
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/kpiflow (your configuration)"

