GO        ?= go
FUZZTIME  ?= 20s
BIN       ?= bin

.PHONY: run test test-chaos vet fuzz build cross bench clean

## run: start a complete single-node edgechat (data in ./data)
run:
	$(GO) run ./cmd/edgechat serve

## test: vet, gofmt check and every test with the race detector
test: vet
	$(GO) test -race -timeout 25m ./...

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

## build: a static binary for this machine
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/edgechat ./cmd/edgechat

## cross: static binaries for edge boxes (linux/arm64) and linux/amd64
cross:
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -o $(BIN)/edgechat-linux-arm64 ./cmd/edgechat
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -o $(BIN)/edgechat-linux-amd64 ./cmd/edgechat

clean:
	rm -rf $(BIN)
