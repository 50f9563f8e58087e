# moonpush — build, run, test, bench.
#
#   make          build ./moonpush (installs missing Debian packages first)
#   make run      build and start with examples/moonpush.lua (no Redis needed)
#   make test     build, run the C unit tests, the layer check and every
#                 busted spec; ends with "N passed, N failed"
#   make bench    benchmark scenarios, appended to docs/benchmarks.md
#   make asan     rebuild with address+undefined sanitizers and run every test
#   make check-asan   the same into build-asan/ (the normal build stays), and
#                 fail on any sanitizer report, the servers' leaks included
#   make fuzz     run each libFuzzer harness for FUZZ_SECONDS (docs/fuzzing.md)
#   make install  binary, Lua runtime, plugins, example config, systemd unit
#                 under PREFIX (/usr/local) and DESTDIR; `make uninstall`

CC      ?= cc
PKGS    := libev-dev libwslay-dev libluajit-5.1-dev luajit libhiredis-dev \
           libhttp-parser-dev libjansson-dev libssl-dev nettle-dev uthash-dev \
           lua-busted lua-http lua-cjson redis-server pkg-config libedit-dev \
           python3-prometheus-client zlib1g-dev
# Only specs need these (Chromium for the browser specs, curl and openssl as
# real SSE and TLS clients): `make test` installs them, `make run` not.
TEST_PKGS := chromium curl openssl
CFLAGS  ?= -O2 -g
MP_CFLAGS = $(CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Isrc \
           $(shell pkg-config --cflags luajit 2>/dev/null)
LDLIBS  = -lev -lwslay -lhttp_parser -ljansson -lnettle -lssl -lcrypto -ledit -lhiredis -lz -lm \
           $(shell pkg-config --libs luajit 2>/dev/null)

SRC     := $(wildcard src/*.c)
REDIS_LUA := $(sort $(wildcard redis/*.lua))
OBJ     := $(SRC:src/%.c=build/%.o) build/redis_scripts.o
CORE_OBJ := $(filter-out build/main.o,$(OBJ))
CTESTS  := $(patsubst tests/%.c,build/tests/%,$(wildcard tests/test_*.c))
# Fuzz harnesses (fuzz/, docs/fuzzing.md): `make test` replays each one over
# its corpus and regressions as the C test build/tests/fuzz_<name>.
FUZZ_HARNESSES := http ws publish frames config deflate
CTESTS  += $(FUZZ_HARNESSES:%=build/tests/fuzz_%)

.PHONY: all deps test-deps run test bench quick asan clean install uninstall

all: deps moonpush build/moonpush/host.so

# Installs what a fresh Debian 12 machine lacks; a no-op when all is present.
deps:
	@missing=""; for p in $(PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

moonpush: $(OBJ)
	$(CC) $(MP_CFLAGS) -o $@ $^ $(LDLIBS)

# The plugin helpers as a Lua module, so plugin unit specs run without a
# server. Never sanitized: it is loaded by a plain luajit (busted).
SO_CFLAGS = $(filter-out -fsanitize=%,$(MP_CFLAGS))
build/moonpush/host.so: src/lua_api.c src/limiter.c src/log.c $(wildcard src/*.h) | build
	@mkdir -p build/moonpush
	$(CC) $(SO_CFLAGS) -fPIC -shared -o $@ src/lua_api.c src/limiter.c src/log.c -lcrypto

build/%.o: src/%.c $(wildcard src/*.h) | build
	$(CC) $(MP_CFLAGS) -c -o $@ $<

# The Redis scripts (redis/*.lua), each embedded as a NUL-terminated char
# array named mp_redis_lua_<file> (declared in src/redis_scripts.h).
build/redis_scripts.c: $(REDIS_LUA) | build
	@for f in $(REDIS_LUA); do \
	  echo "const char mp_redis_lua_$$(basename $$f .lua)[] = {"; \
	  od -An -v -tx1 $$f | sed -e 's/  */ /g' -e 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; \
	  echo "0x00 };"; \
	done > $@

build/redis_scripts.o: build/redis_scripts.c
	$(CC) $(MP_CFLAGS) -c -o $@ $<

build/tests/%: tests/%.c $(CORE_OBJ) | build
	@mkdir -p build/tests
	$(CC) $(MP_CFLAGS) -o $@ $< $(CORE_OBJ) $(LDLIBS)

build:
	@mkdir -p build

run: all
	./moonpush -c examples/moonpush.lua

test-deps:
	@$(MAKE) --no-print-directory deps PKGS="$(TEST_PKGS)"

# tests/layers.sh: no src/ file includes a header of a higher layer
# (the order is in src/README.md); it reports like a C test.
test: all test-deps $(CTESTS)
	@sh tests/run_all.sh $(CTESTS) tests/layers.sh

# Rebuilds everything with sanitizers and runs every test on that build;
# `make clean all` goes back to the normal build.
SAN_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer
asan:
	$(MAKE) clean
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(MAKE) test CFLAGS="$(SAN_CFLAGS)"

# The Redis store alone, two nodes in one process (bench/redis_store.c);
# not part of make test or make bench: run it by hand.
bench/redis_store: bench/redis_store.c $(CORE_OBJ)
	$(CC) $(MP_CFLAGS) -o $@ $< $(CORE_OBJ) $(LDLIBS)

bench: all
	@$(MAKE) -C bench
	@sh bench/run.sh

quick: all
	@$(MAKE) -C bench
	@sh bench/quick

clean:
	rm -rf build moonpush build-asan build-fuzz

# ---- install (docs/operations.md, "Install and run as a service") --------
#
# The binary finds its Lua runtime relative to itself (BINDIR/../share/
# moonpush/lua, src/lua_host.c), so an install works under any PREFIX and
# from a DESTDIR staging tree alike; PREFIX is not compiled in. BINDIR and
# DATADIR must therefore stay siblings under PREFIX. The config under
# SYSCONFDIR is the operator's: installed only when absent, never removed.

PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
BINDIR      = $(PREFIX)/bin
DATADIR     = $(PREFIX)/share/moonpush
DOCDIR      = $(PREFIX)/share/doc/moonpush
UNITDIR    ?= $(PREFIX)/lib/systemd/system
INSTALL    ?= install

install: moonpush
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/lua/moonpush $(DESTDIR)$(DATADIR)/plugins \
	    $(DESTDIR)$(DATADIR)/examples/plugins $(DESTDIR)$(DATADIR)/examples/web \
	    $(DESTDIR)$(DATADIR)/clients/js $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSCONFDIR)/moonpush/plugins
	$(INSTALL) -m 755 moonpush $(DESTDIR)$(BINDIR)/moonpush
	$(INSTALL) -m 644 lua/moonpush.lua $(DESTDIR)$(DATADIR)/lua/
	$(INSTALL) -m 644 lua/moonpush/*.lua $(DESTDIR)$(DATADIR)/lua/moonpush/
	$(INSTALL) -m 644 plugins/*.lua $(DESTDIR)$(DATADIR)/plugins/
	$(INSTALL) -m 644 examples/*.lua $(DESTDIR)$(DATADIR)/examples/
	$(INSTALL) -m 644 examples/plugins/*.lua $(DESTDIR)$(DATADIR)/examples/plugins/
	$(INSTALL) -m 644 examples/web/* $(DESTDIR)$(DATADIR)/examples/web/
	$(INSTALL) -m 644 clients/js/moonpush.js clients/js/moonpush.d.ts $(DESTDIR)$(DATADIR)/clients/js/
	$(INSTALL) -m 644 docs/*.md $(DESTDIR)$(DOCDIR)/
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/share/doc/moonpush/|$(DOCDIR)/|g' \
	    -e 's|/etc/moonpush/|$(SYSCONFDIR)/moonpush/|g' dist/moonpush.service > $(DESTDIR)$(UNITDIR)/moonpush.service
	chmod 644 $(DESTDIR)$(UNITDIR)/moonpush.service
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/moonpush/moonpush.lua ]; then \
	  echo "kept $(DESTDIR)$(SYSCONFDIR)/moonpush/moonpush.lua (the example is in $(DATADIR)/examples)"; \
	else \
	  echo "$(INSTALL) -m 644 examples/moonpush.lua $(DESTDIR)$(SYSCONFDIR)/moonpush/moonpush.lua"; \
	  $(INSTALL) -m 644 examples/moonpush.lua $(DESTDIR)$(SYSCONFDIR)/moonpush/moonpush.lua; \
	fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/moonpush $(DESTDIR)$(UNITDIR)/moonpush.service
	rm -rf $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR)
	@echo "left $(DESTDIR)$(SYSCONFDIR)/moonpush (your config) in place"

# ---- sanitizers and fuzzing (docs/fuzzing.md) ----------------------------

.PHONY: check-asan fuzz fuzz-build fuzz-deps fuzz-merge

FUZZ_SRC := fuzz/fuzz.c fuzz/fuzz.h tests/fuzz_replay.c

# A harness linked with tests/fuzz_replay.c's main() instead of libFuzzer:
# $(call replay_link,CFLAGS,OBJECTS) for target build*/tests/fuzz_<name>.
replay_link = $(CC) $(1) -Ifuzz -DFUZZ_NAME='"$*"' -o $@ $< fuzz/fuzz.c tests/fuzz_replay.c $(2) $(LDLIBS)

build/tests/fuzz_%: fuzz/%.c $(FUZZ_SRC) $(CORE_OBJ) | build
	@mkdir -p build/tests
	$(call replay_link,$(MP_CFLAGS),$(CORE_OBJ))

# The same objects, tests and server with ASan+UBSan in build-asan/, so a
# sanitized run never replaces the objects `make test` links. gcc's
# -fsanitize=undefined leaves out float-cast-overflow (a double too big for
# its integer): asked for here.
ASAN_DIR      := build-asan
ASAN_CFLAGS    = $(SAN_CFLAGS) -fsanitize=float-cast-overflow $(filter-out $(CFLAGS),$(MP_CFLAGS))
ASAN_CORE_OBJ := $(CORE_OBJ:build/%=$(ASAN_DIR)/%)
ASAN_TESTS    := $(CTESTS:build/%=$(ASAN_DIR)/%)

$(ASAN_DIR)/%.o: src/%.c $(wildcard src/*.h)
	@mkdir -p $(@D)
	$(CC) $(ASAN_CFLAGS) -c -o $@ $<

$(ASAN_DIR)/redis_scripts.o: build/redis_scripts.c
	@mkdir -p $(@D)
	$(CC) $(ASAN_CFLAGS) -c -o $@ $<

$(ASAN_DIR)/moonpush: $(ASAN_CORE_OBJ) $(ASAN_DIR)/main.o
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(LDLIBS)

$(ASAN_DIR)/tests/test_%: tests/test_%.c $(ASAN_CORE_OBJ)
	@mkdir -p $(@D)
	$(CC) $(ASAN_CFLAGS) -o $@ $< $(ASAN_CORE_OBJ) $(LDLIBS)

$(ASAN_DIR)/tests/fuzz_%: fuzz/%.c $(FUZZ_SRC) $(ASAN_CORE_OBJ)
	@mkdir -p $(@D)
	$(call replay_link,$(ASAN_CFLAGS),$(ASAN_CORE_OBJ))

# The C tests, the fuzz replays and every spec (against build-asan/moonpush),
# failing on any sanitizer report; ends with "N passed, N failed".
check-asan: all $(ASAN_DIR)/moonpush $(ASAN_TESTS)
	@sh tests/sanitized.sh $(ASAN_DIR) $(ASAN_TESTS)

# libFuzzer builds in build-fuzz/ (clang: Debian's gcc has no libFuzzer).
FUZZ_PKGS     := clang libclang-rt-14-dev
FUZZ_CC       ?= clang
FUZZ_DIR      := build-fuzz
FUZZ_CFLAGS    = $(ASAN_CFLAGS) -fno-sanitize-recover=undefined
FUZZ_CORE_OBJ := $(CORE_OBJ:build/%=$(FUZZ_DIR)/%)
FUZZ_SECONDS  ?= 60
FUZZ          ?= $(FUZZ_HARNESSES)

fuzz-deps:
	@$(MAKE) --no-print-directory deps PKGS="$(FUZZ_PKGS)"

$(FUZZ_DIR)/%.o: src/%.c $(wildcard src/*.h)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_DIR)/redis_scripts.o: build/redis_scripts.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(FUZZ_DIR)/fuzz_%: fuzz/%.c fuzz/fuzz.c fuzz/fuzz.h $(FUZZ_CORE_OBJ)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Ifuzz -o $@ $< fuzz/fuzz.c $(FUZZ_CORE_OBJ) $(LDLIBS)

fuzz-build: fuzz-deps
	@$(MAKE) --no-print-directory $(FUZZ_HARNESSES:%=$(FUZZ_DIR)/fuzz_%)

# Each harness of FUZZ for FUZZ_SECONDS; new inputs go to fuzz/found/ and
# crashes to fuzz/crashes/ (neither in git; see docs/fuzzing.md).
fuzz: fuzz-build
	@sh fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ)

# Adds to fuzz/corpus/ the inputs of fuzz/found/ that reach new coverage.
fuzz-merge: fuzz-build
	@for h in $(FUZZ); do \
	  [ -d fuzz/found/$$h ] || continue; \
	  $(FUZZ_DIR)/fuzz_$$h -merge=1 fuzz/corpus/$$h fuzz/found/$$h 2>&1 | grep -E 'MERGE-OUTER: [0-9]+ new files'; \
	done
