GO        ?= go
FUZZTIME  ?= 20s
BIN       ?= bin
# The MinIO server the S3 store's tests run (services/media/store); pinned,
# built from the module proxy into a cache once per version.
MINIO_VERSION ?= v0.0.0-20260212201848-7aac2a2c5b7c
MINIO_DIR     ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/edgechat-minio/$(MINIO_VERSION)
# MinIO's client mc, which the lifecycle-rule tests use to give that server
# a remote tier (MinIO refuses a transition rule to a storage class it has
# no tier for); pinned and cached the same way (about 2 minutes to build
# on 2 cores with a cold Go build cache).
MC_VERSION ?= v0.0.0-20250313080218-cf909e1063a9
MC_DIR     ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/edgechat-mc/$(MC_VERSION)

.PHONY: run test test-chaos vet fuzz build cross bench bench-compare bench-group clean minio mc web-vendor web-screenshots

## run: start a complete single-node edgechat (data in ./data)
run:
	$(GO) run ./cmd/edgechat serve

## test: vet, gofmt check and every test with the race detector (builds
## MinIO and mc first when they are not in the cache)
test: vet minio mc
	EDGECHAT_MINIO=$${EDGECHAT_MINIO:-$(MINIO_DIR)/minio} EDGECHAT_MC=$${EDGECHAT_MC:-$(MC_DIR)/mc} $(GO) test -race -timeout 25m ./...
	cd third_party/mochi-mqtt-server && $(GO) test -race ./...   # our patch of the broker library
	cd third_party/badger && $(GO) test -race .   # our patch of the database library
	cd third_party/raft-wal && $(GO) test -race ./...   # our patch of the Raft log
	cd third_party/raft && $(GO) test -race .   # our patch of Raft (its own tests are not copied)

## web-vendor: refresh the web client's vendored mqtt.js from npm at the
## pinned version (MQTT_JS_VERSION), checked against npm's integrity, and
## record its checksum in clients/web/vendor.sum
web-vendor:
	scripts/web-vendor.sh

## web-screenshots: run the web client's browser tests with screenshots
## saved into docs/screenshots (needs chromium)
web-screenshots:
	EDGECHAT_SCREENSHOTS=$(CURDIR)/docs/screenshots $(GO) test -count=1 -run 'TestImageMessage|TestGroupsTypingReceiptsPresence' ./clients/web/

## minio: build the pinned MinIO server into $(MINIO_DIR) unless it is there
minio:
	@test -x "$(MINIO_DIR)/minio" || { mkdir -p "$(MINIO_DIR)" && \
	  echo "building MinIO $(MINIO_VERSION) into $(MINIO_DIR) (several minutes, once)" && \
	  GOBIN="$(MINIO_DIR)" timeout 1200 $(GO) install github.com/minio/minio@$(MINIO_VERSION); }

## mc: build the pinned MinIO client into $(MC_DIR) unless it is there
mc:
	@test -x "$(MC_DIR)/mc" || { mkdir -p "$(MC_DIR)" && \
	  echo "building mc $(MC_VERSION) into $(MC_DIR) (a few minutes, once)" && \
	  GOBIN="$(MC_DIR)" timeout 900 $(GO) install github.com/minio/mc@$(MC_VERSION); }

## test-chaos: the long failure run (~3 min): SIGKILL a random node of three
## under load, over and over, then the other multi-process failure tests
## (the partition test needs root, ip and iptables)
test-chaos:
	EDGECHAT_CHAOS=1 $(GO) test -count=1 -v -timeout 20m -run 'Chaos|Partition|Rolling|WholeCluster|SIGKILL' ./cmd/edgechat/

## vet: go vet, go.mod/go.sum tidy (needs the module proxy or a warm cache), gofmt
vet:
	$(GO) vet ./...
	@$(GO) mod tidy -diff >/dev/null || { echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit; the difference:"; $(GO) mod tidy -diff; exit 1; }
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## fuzz: run every fuzz target for FUZZTIME each
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done
	@set -e; cd third_party/mochi-mqtt-server; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done   # our copy of the broker library: its packet decoders read every client's bytes

## bench: the hot-path Go benchmarks with allocations (envelope validation and
## stamping, topic parsing, ACL check, a direct message through the broker,
## FSM apply, archive send and sync, the gateway); compare runs with benchstat
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./internal/wire/ ./cluster/fsm/ ./services/archive/ ./services/gateway/
	$(GO) test -run '^$$' -bench 'DirectMessage|DeliveryACL' -benchmem ./broker/

## bench-compare: the same load scenarios (idle, dm, rooms, durable, history)
## against Mosquitto, plain mochi-mqtt, edgechat on one node and on three,
## broker pinned to CPU 0 and generator to CPU 1; writes docs/perf/README.md
## (10-15 minutes; QUICK=1 for a ~3-minute try; installs Mosquitto if missing)
bench-compare:
	QUICK=$(QUICK) clients/bench/compare.sh

## bench-group: the 10,000-member group (1,000 online) against real processes,
## one node then three: send -> last online member's delivery p50/p99/max and
## server CPU (clients/bench/group.sh: MEMBERS, ONLINE, MESSAGES, RATE, NODES)
bench-group:
	clients/bench/group.sh

# Edge builds leave the terminal chat client out (about 2 MB of terminal UI
# libraries; `edgechat chat` then says how to get it): go build
# ./cmd/edgechat, or EDGE_TAGS= make build, keeps it.
EDGE_TAGS ?= nochat

## build: a static, stripped binary for this machine (as the Dockerfile builds it)
build:
	CGO_ENABLED=0 $(GO) build -trimpath -tags "$(EDGE_TAGS)" -ldflags="-s -w" -o $(BIN)/edgechat ./cmd/edgechat

## cross: static binaries for edge boxes (linux/arm64) and linux/amd64
cross:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -tags "$(EDGE_TAGS)" -ldflags="-s -w" -o $(BIN)/edgechat-linux-arm64 ./cmd/edgechat
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -tags "$(EDGE_TAGS)" -ldflags="-s -w" -o $(BIN)/edgechat-linux-amd64 ./cmd/edgechat

clean:
	rm -rf $(BIN)
