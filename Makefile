# The README's two commands: `make demo` runs the main job, `make test` runs
# every test (installing missing system packages first).
GO ?= go
# staticcheck is pinned and run from the module proxy, so it never enters
# go.mod's build list; it caught a test comparing a value with itself.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build demo test vet fuzz bench e2e

# The packages whose files change with -tags nopkcs11 (the build without
# cgo PKCS#11): those whose file lists differ between the two builds, so a
# package that gains a nopkcs11 file is tested without anyone editing
# this list. Today internal/keys (the stub that refuses token keys) and
# cmd/rampart (its scripts' pkcs11 condition). The packages that only
# link internal/keys compile the same files either way, and none of
# their tests opens a token.
NOPKCS11_PKGS = $(shell { $(GO) list -f '$(PKGFILES)' ./...; $(GO) list -tags nopkcs11 -f '$(PKGFILES)' ./...; } | sort | uniq -u | cut -d' ' -f1 | sort -u)
PKGFILES = {{.ImportPath}} {{.GoFiles}} {{.CgoFiles}} {{.TestGoFiles}} {{.XTestGoFiles}}

build:
	$(GO) build ./...

demo:
	./scripts/demo.sh

test:
	./scripts/test-deps.sh
	$(GO) vet ./...
	$(GO) vet -tags nopkcs11 ./...
	$(GO) run $(STATICCHECK) ./...
	test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) test -race -timeout 30m ./...
	# The build without cgo PKCS#11, where the tag changes what is built;
	# not under -race: what the tag adds is the stub that refuses token
	# keys and the scripts that expect it, sequential code the race run
	# would only make slower (measured: docs/performance.md).
	$(GO) test -tags nopkcs11 $(NOPKCS11_PKGS)
	# Under -race the power-cut test samples its crash points; here it cuts every one.
	$(GO) test -timeout 10m -run TestPowerLoss ./internal/agent/

# Boots the agent on Debian's kernel under real GRUB in QEMU (TCG) through
# update, commit, rollback, failed boots, power cuts and a tampered bundle
# (test/e2e, docs/agent.md "Proved on real boots"). Not part of make test.
e2e:
	./scripts/e2e-deps.sh
	cd test/e2e && $(GO) test -tags e2e -count=1 -v -timeout 85m .

fuzz:
	./scripts/fuzz.sh

bench:
	./bench/verify.sh
