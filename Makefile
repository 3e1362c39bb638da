# The README's two commands: `make demo` runs the main job, `make test` runs
# every test (installing missing system packages first).
GO ?= go
# staticcheck is pinned and run from the module proxy, so it never enters
# go.mod's build list; it caught a test comparing a value with itself.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build demo test vet fuzz bench e2e

# The race run's longest packages, longest first: go test starts packages
# in the order given (./... after them adds the rest, each once), and one
# of them started last ran alone while the other core idled, a minute
# and more of make test's wall time. Their times are in
# docs/performance.md ("The test suite's time").
RACE_FIRST = ./internal/agent/ ./cmd/rampart/ ./internal/server/ ./cmd/rampart-server/ \
	./cmd/rampart-agent/ ./internal/offlinerepo/ ./internal/demo/

# The race run compiles modernc.org/sqlite (SQLite's C translated to Go,
# with its libc and allocator) without checkptr, the pointer-conversion
# checks that -race turns on: translated C converts between uintptr and
# unsafe.Pointer on nearly every memory access, and the checks cost
# internal/server's race run a quarter of its CPU (57 s with them, 42 s
# without; docs/performance.md "The test suite's time"). The race
# detector's own instrumentation stays on everywhere. Turning it off for
# these packages (-race=false) was tried and undone: the linker keeps one
# copy of each generic instantiation, and the uninstrumented copies that
# modernc.org/sqlite and libc compile (sync.Map's, os's atomic.Pointer's)
# replaced the instrumented ones for the whole binary, so the detector
# lost their happens-before edges and reported races that are not.
RACEBUILD = -race -gcflags=all=-dwarf=false '-gcflags=modernc.org/...=-dwarf=false -d=checkptr=0'

# Test binaries are linked without DWARF, and go test runs no vet of its
# own: make test runs go vet with every analyzer first (make test, below).
# They run with the Go collector's default GOGC (env -u GOGC, see below):
# tests that bound a process's heap measure it as it ships.
TESTBUILD = -ldflags=-w -vet=off '-exec=env -u GOGC'

build:
	$(GO) build ./...

demo:
	$(GO) build -o bin/rampart ./cmd/rampart
	./bin/rampart demo

# make test's go commands run with GOGC=400: their CPU is mostly the
# compiler's (on a fresh machine the first test result came 7 min 22 s into
# an 11 min 14 s run), and its collector at the default GOGC=100 cost a
# sixth to a quarter of it. With an empty cache, a race build of
# rampart-server took 169 s of CPU at GOGC=100, 123 to 135 s at 400 and
# 147 s at 800, and go vet ./... 275 s at 100 and 229 s at 400; the
# largest compile's resident memory was 0.7 GB at 100, 1.4 GB at 400
# (docs/performance.md "The test suite's time"). The versitygw build that
# test-deps.sh starts, vet and staticcheck run with it too; the test
# binaries do not ($(TESTBUILD)), and the go builds that tests make set it
# themselves (internal/testbin.CompilerGOGC).
test: export GOGC = 400
test:
	./scripts/test-deps.sh
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	# Two chains side by side, so that one fills the core the other leaves
	# idle (a fresh machine is compile-bound: 115 s to build for vet, 186 s
	# to build the race run's test binaries, 90 s for versitygw in the
	# background, docs/performance.md "The test suite's time"):
	#  - the race run, its longest packages first;
	#  - vet, staticcheck, then the runs without -race, which reuse vet's
	#    build.
	# Tried and undone (docs/performance.md "The test suite's time"):
	# this chain niced, -p 3 for the race run, the small packages' race run
	# moved to the end of this chain; none made a cold run faster.
	# RAMPART_TESTBIN: the programs the tests run as processes
	# (rampart-server, rampart-agent, the scripts' rampart) are built once
	# for the run, into this directory, by the first test that needs them
	# (internal/testbin).
	# GORACE=atexit_sleep_ms=0: a race-built binary otherwise idles a
	# second at exit (the race runtime's default), and the race run has
	# about 50 test binaries: 17 s of the run's wall time.
	# $(TESTBUILD): test binaries without DWARF (-w, and -dwarf=false for
	# the race run's own build). Stack traces and race reports come from
	# the symbol table, which stays; the links take half the time.
	# The runs without -race:
	#  - The build without cgo PKCS#11 (-tags nopkcs11), where the tag
	#    changes what is built: internal/keys (the stub that refuses token
	#    keys) and the scripts of cmd/rampart that depend on the pkcs11
	#    condition (cmd/rampart's TestNopkcs11Scope fails if the tag
	#    reaches another package or script). Not under -race: sequential
	#    code, and the race run covers the rest. Measured: 11 s of CPU
	#    (docs/performance.md).
	#  - Under -race the power-cut test samples its crash points; here it
	#    cuts every one.
	#  - Under -race the offline repository's property test runs one seed
	#    of six (sequential code, 40 s under the detector); here all six.
	#  - The fleet operations end to end with 200 real agents
	#    (internal/sim TestFleetE2E) and chunkindex's bound of a million
	#    chunks: skipped under -race, too slow there (59 s for the bound),
	#    so run here without it (their time: docs/performance.md).
	# The tag changes the files of internal/keys and of cmd/rampart's tests
	# alone (cmd/rampart's TestNopkcs11Scope); vetting cmd/rampart builds
	# every package it imports with the tag too.
	testbin=$$(mktemp -d) && export RAMPART_TESTBIN=$$testbin && trap 'rm -rf "$$testbin"' EXIT; \
	GORACE=atexit_sleep_ms=0 $(GO) test $(RACEBUILD) $(TESTBUILD) -timeout 30m $(RACE_FIRST) ./... & race=$$!; \
	$(GO) vet ./... && \
	$(GO) vet -tags nopkcs11 ./internal/keys/ ./cmd/rampart/ && \
	$(GO) run $(STATICCHECK) ./... && \
	$(GO) test $(TESTBUILD) -tags nopkcs11 ./internal/keys/ && \
	$(GO) test $(TESTBUILD) -tags nopkcs11 -run '^TestScripts$$/^pkcs11' ./cmd/rampart/ && \
	$(GO) test $(TESTBUILD) -timeout 10m -run TestPowerLoss ./internal/agent/ && \
	$(GO) test $(TESTBUILD) -run '^TestBuildTooManyChunks$$' ./internal/chunkindex/ && \
	$(GO) test $(TESTBUILD) -run '^TestNoOfflineSignatureOnUnaddedContent$$' ./internal/offlinerepo/ && \
	$(GO) test $(TESTBUILD) -timeout 15m -run '^TestFleetE2E$$' ./internal/sim/; other=$$?; \
	wait $$race; raced=$$?; \
	if [ $$raced -ne 0 ] || [ $$other -ne 0 ]; then echo "make test: FAILED (race run exit $$raced, vet, staticcheck and the other runs exit $$other)"; exit 1; fi

# Boots the agent on Debian's kernels under real GRUB (x86_64) and U-Boot
# (arm64) in QEMU (TCG) through update, commit, rollback, failed boots, power
# cuts and a tampered bundle (test/e2e, docs/agent.md "Proved on real
# boots"). Not part of make test: CI (.ci/run) runs it after make test.
e2e:
	./scripts/e2e-deps.sh
	cd test/e2e && $(GO) test -tags e2e -count=1 -v -timeout 45m .

fuzz:
	./scripts/fuzz.sh

bench:
	./bench/verify.sh
