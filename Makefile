# edgeapp: edged (the edge) and appd (the application-server master).
# `make demo` builds both and runs the demo appliance on loopback;
# `make test` runs every test. See README.md.

GO      ?= go
PREFIX  ?= /usr
DESTDIR ?=
BIN     := bin
# Package versions must start with a digit: untagged trees are 0.0.0~git<hash>.
VERSION ?= $(shell v=$$(git describe --tags --always --dirty 2>/dev/null | sed 's/^v//'); \
             case "$$v" in ([0-9]*.*) echo "$$v";; ("") echo 0.0.0;; (*) echo "0.0.0~git$$v";; esac)
LDFLAGS := -s -w -X main.version=$(VERSION)
GOFLAGS_BUILD := -trimpath -ldflags "$(LDFLAGS)"

ENGINE_SUITES := ./edged ./edged/server ./edged/proxy ./edged/static ./edged/cache ./edged/compress
FUZZTIME ?= 20s

.PHONY: fuzz all build test test-short test-modcache lint bench deb rpm packages e2e vm-test install demo deps testssl clean FORCE

all: build

build: $(BIN)/edged $(BIN)/appd

# The daemons are built without cgo: they need no C library at all (the rpm
# runs on any glibc), and appd looks users and groups up in /etc/passwd and
# /etc/group itself (appd.toml(5) says what that means for NSS users).
$(BIN)/edged: FORCE
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $@ ./edged

$(BIN)/appd: FORCE
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $@ ./appd

# Every test: formatting, vet, unit and integration tests (race detector on),
# then the packaging checks that run on this machine. The qemu end-to-end
# test is `make e2e`.
test: lint
	$(GO) test -race -count=1 -timeout 20m ./...
	@echo "appd's user and configuration tests again without cgo, as the packages build it:"
	CGO_ENABLED=0 $(GO) test -count=1 ./appd/config ./appd
	CGO_ENABLED=0 $(GO) test -count=1 -run User ./appd/supervisor
	# The suites that go through a server, again on the fallback engine.
	EDGED_TEST_ENGINE=net/http $(GO) test -race -count=1 -timeout 20m $(ENGINE_SUITES)
	# The integration suite again over HTTP/2 (h2c to every edged it starts;
	# edged itself is built with -race either way).
	EDGED_TEST_H2C=1 $(GO) test -count=1 -timeout 20m ./edged

# Tests take files or tools from the Go module cache (Pebble's
# certificates, Pebble and h2spec built from go.mod's tools) only through
# internal/gotool, whose own tests do it on an empty module cache in every
# make test. This target checks that no test goes around it (`go mod
# download`, `go list -m`, `go build` of a module's package), then runs
# the packages that use the most of it with an empty GOMODCACHE each, as
# on a fresh machine: nothing may depend on what an earlier run downloaded.
MODCACHE_TESTS := ./internal/gotool ./edged/tlsconf
MODCACHE_MARKERS := -e '"mod", "download"' -e '"list", "-m"' \
	-e '"go", "\(build\|install\|run\|tool\)".*"[a-z0-9-][a-z0-9-]*\.[a-z][a-z.]*/'
test-modcache:
	@around=$$(grep -rl --include='*.go' $(MODCACHE_MARKERS) . | grep -v '^./internal/gotool/'); \
	  if [ -n "$$around" ]; then echo "these files use the module cache directly; use internal/gotool:"; echo "$$around"; exit 1; fi
	@set -e; for p in $(MODCACHE_TESTS); do \
	  d=$$(mktemp -d /tmp/edgeapp-modcache.XXXXXX); \
	  echo "GOMODCACHE=$$d $(GO) test -short -count=1 $$p"; \
	  rc=0; GOMODCACHE=$$d $(GO) test -short -count=1 $$p || rc=$$?; \
	  GOMODCACHE=$$d $(GO) clean -modcache; rm -rf $$d; \
	  [ $$rc = 0 ] || exit $$rc; \
	done

# Every fuzzer for FUZZTIME each (their seed corpora run in make test).
fuzz:
	@set -e; for dir in $$(grep -l --include='*_test.go' -r '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h -o '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go | cut -d' ' -f2); do \
	    echo "fuzz $$dir $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$dir; \
	  done; \
	done

test-short: lint
	$(GO) test -short -count=1 ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Benchmarks against nginx and the others; prints tables, never fails on speed.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./...
	@for s in bench/*.sh; do [ -x "$$s" ] && "$$s" || true; done

# Packages ship position-independent binaries (lintian: hardening-no-pie,
# hardening-no-relro); bin/ is rebuilt that way first.
PKG_GOFLAGS := -trimpath -buildmode=pie -ldflags "$(LDFLAGS)"

deb:
	$(MAKE) build GOFLAGS_BUILD='$(PKG_GOFLAGS)'
	VERSION=$(VERSION) packaging/build.sh deb

rpm:
	$(MAKE) build GOFLAGS_BUILD='$(PKG_GOFLAGS)'
	VERSION=$(VERSION) packaging/build.sh rpm

packages: deb rpm

e2e: packages
	packaging/e2e/run.sh

# testssl.sh against edged's https listener (about 3 minutes); fails on a
# HIGH or CRITICAL finding.
testssl:
	edged/tlsconf/testdata/testssl.sh

# appd's cgroup tests need a real delegated cgroup v2 tree: run them in the VM.
vm-test:
	packaging/e2e/vm-test.sh

install: build
	install -Dm755 $(BIN)/edged $(DESTDIR)$(PREFIX)/bin/edged
	install -Dm755 $(BIN)/appd $(DESTDIR)$(PREFIX)/bin/appd
	install -Dm644 -t $(DESTDIR)/usr/lib/systemd/system units/*.socket units/*.service
	install -Dm644 etc/edged/edged.toml $(DESTDIR)/etc/edged/edged.toml
	install -d $(DESTDIR)/etc/edged/sites.d
	install -d $(DESTDIR)/etc/appd
	install -Dm644 -t $(DESTDIR)/etc/appd etc/appd/*
	install -Dm644 -t $(DESTDIR)$(PREFIX)/share/man/man8 man/*.8
	install -Dm644 -t $(DESTDIR)$(PREFIX)/share/man/man5 man/*.5
	# The group appd-socket of the app sockets, which edged.service joins
	# (SupplementaryGroups=): without it edged.service does not start.
	install -Dm644 packaging/sysusers/appd-socket.conf $(DESTDIR)/usr/lib/sysusers.d/appd-socket.conf
	[ -n "$(DESTDIR)" ] || ! command -v systemd-sysusers >/dev/null || systemd-sysusers appd-socket.conf

# The demo appliance: the demo app's workers under appd, edged in front, all
# on loopback, with the config files in demo/.
demo: build
	demo/run.sh

# Debian packages the tests, benchmarks and VM tests use, installed (as root)
# by `make deps`, which .ci/run calls on a fresh machine. This is the one
# list of peers: add yours to the line of its purpose. A test whose peer is
# missing skips and names the package it wants.
DEPS_TEST  := curl python3 gunicorn knot apache2-utils dovecot-imapd dovecot-pop3d postfix chromium
DEPS_CLUSTER := etcd-server
DEPS_BENCH := nginx haproxy varnish wrk caddy
DEPS_PKG   := systemd cpio lintian rpm rpmlint mandoc
DEPS_VM    := qemu-system-x86 qemu-utils mmdebstrap e2fsprogs busybox-static kmod
DEPS_TLS   := testssl.sh
DEPS := $(DEPS_TEST) $(DEPS_CLUSTER) $(DEPS_BENCH) $(DEPS_PKG) $(DEPS_VM) $(DEPS_TLS)
# On a shared machine another apt may hold dpkg's lock: wait for it.
APT := apt-get -o DPkg::Lock::Timeout=600
deps:
	$(APT) update
	DEBIAN_FRONTEND=noninteractive $(APT) install -y --no-install-recommends $(DEPS)

clean:
	rm -rf $(BIN) dist
