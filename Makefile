# Augur: `make demo` runs the system on one machine, `make test` runs every test.
# Both install what they need first (scripts/deps.sh).

GOBIN_DIR := $(shell ./scripts/deps.sh)
export PATH := $(GOBIN_DIR):$(PATH)
GO := $(GOBIN_DIR)/go
PKGS := ./...
# An execution count rather than a duration: a time limit that expires while the fuzzer is
# minimising an input reports "context deadline exceeded" as a failure (a Go fuzzing quirk).
FUZZTIME ?= 100000x

.PHONY: slow all build test unit fuzz bench demo lint clean

all: build

build:
	$(GO) build $(PKGS)
	$(GO) build -o bin/ ./cmd/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

test: lint unit slow fuzz

# One package at a time: the end-to-end tests compare real-time latencies, which other
# packages' tests running beside them on a 2-core machine would disturb.
unit:
	$(GO) test -race -count=1 -p 1 -timeout 14m $(PKGS)

# Tests that skip under the race detector: virtual-time runs too slow there (ten times
# slower), and allocation counts it distorts (its sync.Pool drops buffers). Run once without.
slow:
	$(GO) test -count=1 -run '^(TestDriftCorrectedAttainment|TestPredictAllocatesNothing.*)$$' ./predictor

# Each fuzz target runs briefly; run longer with e.g. `make fuzz FUZZTIME=5000000x`.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseBody$$' -fuzztime $(FUZZTIME) ./extproc
	$(GO) test -run '^$$' -fuzz '^FuzzSSEReader$$' -fuzztime $(FUZZTIME) ./extproc
	$(GO) test -run '^$$' -fuzz '^FuzzUsageFilter$$' -fuzztime $(FUZZTIME) ./extproc
	$(GO) test -run '^$$' -fuzz '^FuzzCheckBinary$$' -fuzztime $(FUZZTIME) ./models/xgbconv
	$(GO) test -run '^$$' -fuzz '^FuzzParseAzure$$' -fuzztime $(FUZZTIME) ./windtunnel/workload
	$(GO) test -run '^$$' -fuzz '^FuzzParseMooncake$$' -fuzztime $(FUZZTIME) ./windtunnel/workload

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

demo: build
	./bin/demo

clean:
	rm -rf bin .cache
