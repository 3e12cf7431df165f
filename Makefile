# pixelgate: `make run` and `make test` are the two commands; `make help` lists the rest.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

CARGO ?= cargo
DEV_CONFIG := deploy/pixelgate.dev.toml
DEV_KEYS := target/dev/keys

# Runs apt-get as root, through sudo when we are not root.
APT := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# Installs the Debian packages named after `--` when the command or file before each is missing.
# Usage: $(call ensure,COMMAND-OR-PATH=PACKAGE ...); a path starts with / or contains a glob.
ensure = missing=(); \
	for pair in $(1); do \
	  what=$${pair%%=*}; pkg=$${pair\#*=}; \
	  case $$what in \
	    /*) compgen -G "$$what" >/dev/null || missing+=("$$pkg") ;; \
	    *) command -v "$$what" >/dev/null || missing+=("$$pkg") ;; \
	  esac; \
	done; \
	if (( $${\#missing[@]} )); then \
	  command -v apt-get >/dev/null || { echo "missing: $${missing[*]}; install them with your package manager" >&2; exit 1; }; \
	  echo "installing $${missing[*]}"; \
	  $(APT) update -qq && $(APT) install -y -qq --no-install-recommends $${missing[@]} >/dev/null; \
	fi

.PHONY: run-deps
run-deps: ## Install what make run needs from Debian's packages when missing (Redis)
	@$(call ensure,redis-server=redis-server redis-cli=redis-tools)

.PHONY: deps
deps: ## Install what the tests need from Debian's packages when missing (Redis, MariaDB, PostgreSQL, slowhttptest)
	@$(call ensure,redis-server=redis-server redis-cli=redis-tools mariadbd=mariadb-server \
	  mariadb=mariadb-client /usr/lib/postgresql/*/bin/postgres=postgresql psql=postgresql-client \
	  slowhttptest=slowhttptest)

.PHONY: test
test: deps ## Everything CI runs: format check, clippy with warnings denied, all tests
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  echo "$(CARGO) nextest run --workspace --locked"; $(CARGO) nextest run --workspace --locked; \
	else \
	  echo "$(CARGO) test --workspace --locked"; $(CARGO) test --workspace --locked; \
	fi
	$(MAKE) fuzz-ci
	$(MAKE) rpm-test

# Fuzzing (docs/security.md): the targets in fuzz/, run by fuzz/run.sh with cargo-fuzz (pinned)
# on the nightly toolchain. fuzz-ci uses an unoptimised build, quick to make from cold; fuzz an
# optimised one, several times faster per input, for long runs.
CARGO_FUZZ_VERSION := 0.13.2
FUZZ_TIME ?= 300

.PHONY: fuzz-deps
fuzz-deps: ## Install the nightly toolchain and cargo-fuzz when missing
	@$(CARGO) +nightly --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
	@# cargo-fuzz only drives cargo and libFuzzer: built unoptimised, it installs in half the time.
	@[[ "$$($(CARGO) +nightly fuzz --version 2>/dev/null)" == "cargo-fuzz $(CARGO_FUZZ_VERSION)" ]] || \
	  $(CARGO) install cargo-fuzz --locked --debug --version $(CARGO_FUZZ_VERSION)

.PHONY: fuzz
fuzz: fuzz-deps ## Fuzz each target for FUZZ_TIME seconds (default 300), optimised build
	CARGO="$(CARGO)" fuzz/run.sh $(FUZZ_TIME) --release

.PHONY: fuzz-ci
fuzz-ci: fuzz-deps ## Fuzz each target for 15 seconds at most (part of make test)
	CARGO="$(CARGO)" fuzz/run.sh 14 --dev

# The RPM (docs/packaging.md). The binary is built with zig against glibc 2.28, the floor that
# EL8 sets, with a GNU build id as rpm-based systems expect; cargo-zigbuild and zig come from
# PyPI into a virtualenv under target/, pinned to the versions proven here.
RPM_TRIPLE := x86_64-unknown-linux-gnu
RPM_BUILT := target/$(RPM_TRIPLE)/release/pixelgate
# What the package ships: the symbol table stays (backtraces name functions), the debug info is
# split off into target/rpm/pixelgate.debug, found through the build id or the debug link.
RPM_BINARY := target/rpm/pixelgate
RPM_RELEASE ?= 1
RPM_TOOLS := target/rpm-tools
ZIGBUILD_PINS := cargo-zigbuild==0.24.0 ziglang==0.17.1
# Reproducible packages: file and build times are the last commit's unless the caller sets one.
# It is given to the packaging step only: C build scripts (ring) rebuild whenever it changes.
RPM_SOURCE_DATE = $(or $(SOURCE_DATE_EPOCH),$(shell git log -1 --format=%ct 2>/dev/null),0)

.PHONY: rpm-deps
rpm-deps: ## Install what rpm and rpm-test need when missing (rpm, rpmlint, debootstrap, nspawn, zig)
	@$(call ensure,rpm=rpm rpmlint=rpmlint debootstrap=debootstrap systemd-nspawn=systemd-container \
	  nsenter=util-linux pgrep=procps objdump=binutils /usr/share/shunit2/shunit2=shunit2 \
	  python3=python3)
	@python3 -c 'import ensurepip' 2>/dev/null || { echo "installing python3-venv"; \
	  $(APT) update -qq && $(APT) install -y -qq --no-install-recommends python3-venv >/dev/null; }
	@if ! $(RPM_TOOLS)/bin/cargo-zigbuild --version >/dev/null 2>&1; then \
	  echo "installing $(ZIGBUILD_PINS) from PyPI into $(RPM_TOOLS)"; \
	  python3 -m venv $(RPM_TOOLS) && $(RPM_TOOLS)/bin/pip install -q $(ZIGBUILD_PINS); \
	fi

.PHONY: rpm
rpm: rpm-deps ## Build target/rpm/pixelgate-VERSION-RELEASE.x86_64.rpm (RPM_RELEASE=1)
	env -u SOURCE_DATE_EPOCH PATH="$(CURDIR)/$(RPM_TOOLS)/bin:$$PATH" \
	  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,--build-id=sha1" \
	  $(CARGO) zigbuild --release --locked --target $(RPM_TRIPLE).2.28 -p pixelgate
	@mkdir -p target/rpm
	objcopy --only-keep-debug $(RPM_BUILT) target/rpm/pixelgate.debug
	objcopy --strip-debug --add-gnu-debuglink=target/rpm/pixelgate.debug $(RPM_BUILT) $(RPM_BINARY)
	env -u SOURCE_DATE_EPOCH $(CARGO) build --quiet --locked -p pixelgate-rpm
	SOURCE_DATE_EPOCH=$(RPM_SOURCE_DATE) target/debug/pixelgate-rpm \
	  --out target/rpm package --binary $(RPM_BINARY) --release $(RPM_RELEASE)

.PHONY: rpm-test
rpm-test: rpm-deps ## Prove the RPM: glibc floor, rpmlint, install, boot, smoke tests, upgrade, erase
	RPM_BINARY=$(RPM_BINARY) SOURCE_DATE_EPOCH=$(RPM_SOURCE_DATE) rpm/rpm-test.sh

.PHONY: bench-deps
bench-deps: ## Install what the side-by-side bench needs when missing (nginx, ngx_lua, lua-resty-redis, wrk)
	@$(call ensure,nginx=nginx /usr/lib/nginx/modules/ngx_http_lua_module.so=libnginx-mod-http-lua \
	  /usr/share/lua/5.1/nginx/redis.lua=lua-nginx-redis wrk=wrk taskset=util-linux)

.PHONY: bench
bench: deps bench-deps ## Run the benchmarks of docs/benchmarks.md (enqueue; drain; pixelgate beside nginx, with plots)
	$(CARGO) bench -p pixelgate-queue --bench enqueue
	$(CARGO) bench -p pixelgate-drain --bench drain
	$(CARGO) build --release --locked -p pixelgate -p pixelgate-bench
	target/release/pixelgate-bench run

# The fault suite with long outages: each fault lasts SOAK_SECONDS under load (docs/operations.md).
SOAK_SECONDS ?= 60
.PHONY: soak
soak: deps ## Run the fault suite with long outages under load (SOAK_SECONDS=60 per fault)
	PIXELGATE_FAULT_SECONDS=$(SOAK_SECONDS) $(CARGO) test --locked -p pixelgate --test faults -- --test-threads 1

.PHONY: build
build: ## Build the release binary (target/release/pixelgate)
	$(CARGO) build --release --locked -p pixelgate

.PHONY: dev-key
dev-key: build ## Make the development signing key under target/dev/keys when there is none
	@mkdir -p $(DEV_KEYS)
	@if [ ! -f $(DEV_KEYS)/1.key ]; then \
	  (umask 077; target/release/pixelgate keygen > $(DEV_KEYS)/1.key); \
	  echo "made development signing key $(DEV_KEYS)/1.key"; \
	fi

.PHONY: dev-redis
dev-redis: ## Start a local Redis on 127.0.0.1:6379 unless one answers there (installs redis-server when missing)
	@if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then \
	  echo "using the Redis at 127.0.0.1:6379"; \
	else \
	  $(MAKE) run-deps; \
	  mkdir -p target/dev/redis; \
	  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --dir $(CURDIR)/target/dev/redis \
	    --appendonly yes --save "" --logfile $(CURDIR)/target/dev/redis/redis.log \
	    --pidfile $(CURDIR)/target/dev/redis/redis.pid; \
	  for i in $$(seq 50); do redis-cli -p 6379 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done; \
	  echo "started Redis on 127.0.0.1:6379 (data in target/dev/redis; stop it with: redis-cli -p 6379 shutdown)"; \
	fi

.PHONY: run
run: dev-key dev-redis ## Build, start Redis and the edge with the development config, print URLs to try
	@target/release/pixelgate -t -c $(DEV_CONFIG)
	@pixel=$$(target/release/pixelgate -c $(DEV_CONFIG) sign open --account acme --campaign spring-sale --message msg-000123 --recipient r-42); \
	click=$$(target/release/pixelgate -c $(DEV_CONFIG) sign click --account acme --campaign spring-sale --message msg-000123 --recipient r-42 --url https://example.com/landing); \
	echo; echo "signed pixel: $$pixel"; echo "signed click: $$click"; echo; \
	echo "try, in another terminal:"; \
	echo "  curl -si '$$pixel' | head -5"; \
	echo "  curl -si '$$click' | head -5"; \
	echo "  redis-cli -p 6379 lrange pixelgate:events 0 -1"; \
	echo "  curl -s 'http://127.0.0.1:9090/test?value=hello'"; \
	echo "  curl -s http://127.0.0.1:9090/metrics | grep ^pixelgate_http"; \
	echo; echo "starting pixelgate serve (Ctrl-C stops it)"; echo
	@exec target/release/pixelgate serve -c $(DEV_CONFIG)

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: clean
clean: ## Remove build output
	$(CARGO) clean
