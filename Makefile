# moonpush — build, run, test, bench.
#
#   make          build ./moonpush (installs missing Debian packages first)
#   make run      build and start with examples/moonpush.lua (no Redis needed)
#   make test     build, run the C unit tests and every busted spec;
#                 ends with "N passed, N failed"
#   make bench    benchmark scenarios, appended to docs/benchmarks.md
#   make asan     build ./moonpush with address+undefined sanitizers

CC      ?= cc
PKGS    := libev-dev libwslay-dev libluajit-5.1-dev luajit libhiredis-dev \
           libhttp-parser-dev libjansson-dev libssl-dev uthash-dev \
           lua-busted lua-http lua-cjson redis-server pkg-config
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Isrc \
           $(shell pkg-config --cflags luajit 2>/dev/null)
LDLIBS  := -lev -lwslay -lhttp_parser -ljansson -lcrypto -lm \
           $(shell pkg-config --libs luajit 2>/dev/null)

SRC     := $(wildcard src/*.c)
OBJ     := $(SRC:src/%.c=build/%.o)
CORE_OBJ := $(filter-out build/main.o,$(OBJ))
CTESTS  := $(patsubst tests/%.c,build/tests/%,$(wildcard tests/test_*.c))

.PHONY: all deps run test ctest spec bench quick asan clean

all: deps moonpush

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
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

build/%.o: src/%.c $(wildcard src/*.h) | build
	$(CC) $(CFLAGS) -c -o $@ $<

build/tests/%: tests/%.c $(CORE_OBJ) | build
	@mkdir -p build/tests
	$(CC) $(CFLAGS) -o $@ $< $(CORE_OBJ) $(LDLIBS)

build:
	@mkdir -p build

run: all
	./moonpush -c examples/moonpush.lua

test: all $(CTESTS)
	@sh tests/run_all.sh $(CTESTS)

asan:
	$(MAKE) clean
	$(MAKE) CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer"

bench: all
	@$(MAKE) -C bench
	@sh bench/run.sh

quick: all
	@$(MAKE) -C bench
	@sh bench/quick

clean:
	rm -rf build moonpush
