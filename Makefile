# mossfs — see README.md. Every target works on a fresh Debian 12 machine as root.
GO      ?= go
BIN     := bin
GOFLAGS_STATIC := -trimpath -ldflags='-s -w'
# Short fuzz runs in `make test`, longer ones in `make fuzz`.
FUZZTIME ?= 3s
TEST_TIMEOUT ?= 60m
# containers/image and containers/storage (linked by moss-oci only) build
# without cgo (gpgme, btrfs) with these tags; every go command gets them.
export GOFLAGS := -tags=containers_image_openpgp,exclude_graphdriver_btrfs

.PHONY: all build docs install deps test unit fuzz fuzz-short bench lint demo kvmtest clean

# Installation layout (Debian and AerynOS): PREFIX=/usr, DESTDIR for staging.
PREFIX     ?= /usr
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
DATADIR    ?= $(PREFIX)/share
MANDIR     ?= $(DATADIR)/man
UNITDIR    ?= $(PREFIX)/lib/systemd/system
PRESETDIR  ?= $(PREFIX)/lib/systemd/system-preset
DRACUTDIR  ?= $(PREFIX)/lib/dracut/modules.d
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
# Debian's zsh reads vendor-completions; AerynOS's (like upstream's) site-functions.
ZSHCOMPDIR ?= $(if $(wildcard /etc/debian_version),$(DATADIR)/zsh/vendor-completions,$(DATADIR)/zsh/site-functions)
DOCS       := $(BIN)/docs
PROGRAMS   := mossfs moss-compose moss-oci

all: build

build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_STATIC) -o $(BIN)/ ./cmd/...
	ln -sf moss-compose $(BIN)/mkcomposefs

# Man pages and shell completions, generated from the cobra commands by a
# build with the gendocs tag (the installed binaries do not carry the generator).
# -tags on the command line replaces GOFLAGS's: keep those tags too.
comma := ,
DOCTAGS = $(subst $(eval) ,$(comma),$(strip $(subst -tags=,,$(filter -tags=%,$(GOFLAGS))) gendocs))
docs:
	rm -rf $(DOCS)
	$(foreach p,$(PROGRAMS),$(GO) run -tags $(DOCTAGS) ./cmd/$(p) gen-docs $(DOCS) &&) true

install: build docs
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PRESETDIR) \
		$(DESTDIR)$(DRACUTDIR)/90mossfs $(DESTDIR)$(MANDIR)/man1 \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0755 $(addprefix $(BIN)/,$(PROGRAMS)) $(DESTDIR)$(BINDIR)/
	ln -sf moss-compose $(DESTDIR)$(BINDIR)/mkcomposefs
	install -m 0644 dist/systemd/mossfs-triggers.service $(DESTDIR)$(UNITDIR)/
	install -m 0644 dist/systemd/80-mossfs.preset $(DESTDIR)$(PRESETDIR)/
	install -m 0755 dist/dracut/90mossfs/module-setup.sh $(DESTDIR)$(DRACUTDIR)/90mossfs/
	install -m 0644 dist/dracut/90mossfs/mossfs-boot.service $(DESTDIR)$(DRACUTDIR)/90mossfs/
	install -m 0644 $(DOCS)/man1/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(DOCS)/completions/bash/* $(DESTDIR)$(BASHCOMPDIR)/
	install -m 0644 $(DOCS)/completions/zsh/* $(DESTDIR)$(ZSHCOMPDIR)/
	install -m 0644 $(DOCS)/completions/fish/* $(DESTDIR)$(FISHCOMPDIR)/

# Install what the tests and the demo need (idempotent).
deps:
	bash scripts/install-deps.sh

# Everything: deps, lint, build, unit and kernel tests (mounts run in private
# mount namespaces), every benchmark once on small inputs, every fuzz target briefly.
test: deps lint build unit fuzz-short

unit:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -bench=. -benchtime=1x ./...

fuzz-short:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

fuzz:
	FUZZTIME=60s FUZZMINIMIZETIME=60s bash scripts/fuzz.sh

# Full-size benchmarks (65k-entry trees); figures go into closing notes.
# The binaries as users run them first (one ROW line per row of issue 13,
# each with its baseline from the same run), then the in-process ones.
# MOSSFS_BENCH_DEBIAN=1 make bench: the pull benchmark (internal/ocipull) on a
# ~1 GB debootstrapped Debian 12 image, cached in /var/tmp/mossfs-bench-debian.
bench: deps build
	MOSSFS_BENCH_FULL=1 $(GO) test -count=1 -timeout 120m -run '^$$' -bench=. ./internal/procbench
	MOSSFS_BENCH_FULL=1 $(GO) test -count=1 -timeout 120m -run '^$$' -bench=. -benchmem $$($(GO) list ./... | grep -v /internal/procbench$$)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

demo: deps build
	bash scripts/demo.sh

kvmtest: deps build
	MOSSFS_KVM_DRACUT=1 $(GO) test -count=1 -timeout 30m -v ./kvmtests/...

clean:
	rm -rf $(BIN)

# Boot a VM (Debian 6.12 kernel, QEMU) into a composed transaction: compose,
# sign and write BLS entries in one boot, then boot the default entry's
# command line through mossfs boot and switch_root, printing what it mounted.
.PHONY: demo-boot
demo-boot: deps build
	$(GO) run ./kvmtests/cmd/demoboot
