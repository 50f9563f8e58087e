# moonpush — build, run, test, bench.
#
#   make          build ./moonpush (installs missing Debian packages first)
#   make run      build and start with examples/moonpush.lua (no Redis needed)
#   make test     build, run the C unit tests and every busted spec;
#                 ends with "N passed, N failed"
#   make bench    benchmark scenarios, appended to docs/benchmarks.md
#   make asan     rebuild with address+undefined sanitizers and run every test

CC      ?= cc
PKGS    := libev-dev libwslay-dev libluajit-5.1-dev luajit libhiredis-dev \
           libhttp-parser-dev libjansson-dev libssl-dev nettle-dev uthash-dev \
           lua-busted lua-http lua-cjson redis-server pkg-config libedit-dev \
           python3-prometheus-client chromium
CFLAGS  ?= -O2 -g
MP_CFLAGS := $(CFLAGS) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Isrc \
           $(shell pkg-config --cflags luajit 2>/dev/null)
LDLIBS  := -lev -lwslay -lhttp_parser -ljansson -lnettle -lcrypto -ledit -lm \
           $(shell pkg-config --libs luajit 2>/dev/null)

SRC     := $(wildcard src/*.c)
OBJ     := $(SRC:src/%.c=build/%.o)
CORE_OBJ := $(filter-out build/main.o,$(OBJ))
CTESTS  := $(patsubst tests/%.c,build/tests/%,$(wildcard tests/test_*.c))

.PHONY: all deps run test bench quick asan clean

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
SO_CFLAGS := $(filter-out -fsanitize=%,$(MP_CFLAGS))
build/moonpush/host.so: src/lua_api.c src/limiter.c src/log.c $(wildcard src/*.h) | build
	@mkdir -p build/moonpush
	$(CC) $(SO_CFLAGS) -fPIC -shared -o $@ src/lua_api.c src/limiter.c src/log.c -lcrypto

build/%.o: src/%.c $(wildcard src/*.h) | build
	$(CC) $(MP_CFLAGS) -c -o $@ $<

build/tests/%: tests/%.c $(CORE_OBJ) | build
	@mkdir -p build/tests
	$(CC) $(MP_CFLAGS) -o $@ $< $(CORE_OBJ) $(LDLIBS)

build:
	@mkdir -p build

run: all
	./moonpush -c examples/moonpush.lua

test: all $(CTESTS)
	@sh tests/run_all.sh $(CTESTS)

# Rebuilds everything with sanitizers and runs every test on that build;
# `make clean all` goes back to the normal build.
SAN_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer
asan:
	$(MAKE) clean
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    $(MAKE) test CFLAGS="$(SAN_CFLAGS)"

bench: all
	@$(MAKE) -C bench
	@sh bench/run.sh

quick: all
	@$(MAKE) -C bench
	@sh bench/quick

clean:
	rm -rf build moonpush
