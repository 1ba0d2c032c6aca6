# `make` builds everything into build/; `make check` runs the whole suite,
# including an ASan+UBSan build of the same sources (build/asan/).
BUILD ?= build
CC ?= gcc
PKGS := jansson libseccomp libcap zlib liblzma libzstd liblz4 liburing
SAN_FLAGS ?=
OPT ?= -O2

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# -Ulinux: gnu11 predefines `linux`, which would clash with the OCI field name spec->linux.
CFLAGS := -DCAPSULE_COMMIT=\"$(COMMIT)\" -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -Ulinux -Isrc -g $(OPT) $(SAN_FLAGS) $(PKG_CFLAGS) -MMD -MP
LDFLAGS := $(SAN_FLAGS)
# The libraries are linked statically (glibc stays dynamic): every runtime command is a fresh exec,
# and resolving seven shared objects was a third of capsule's 1 ms start-up.
# libslirp (--net user,impl=slirp) is the exception: Debian ships no libslirp.a, and linked
# dynamically it would load glib into every command (2 ms of CPU each). net_slirp.c loads it
# with dlopen when a VM asks for it; only its header (libslirp-dev) is needed to build.
LDLIBS := -Wl,-Bstatic $(PKG_LIBS) -Wl,-Bdynamic -lpthread

LIB_SRC := $(wildcard src/common/*.c src/runtime/*.c src/vmm/*.c src/vmm/*/*.c)
CLI_SRC := $(wildcard src/cli/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
# The unit tests' shared helpers (check.c's harness, mmio_driver.c, ...): every other .c there.
UNIT_HELPER_SRC := $(filter-out $(UNIT_SRC),$(wildcard tests/unit/*.c))

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

# Guest test payloads: freestanding static ELFs the VMM starts in 64-bit ring 3.
PAYLOAD_SRC := $(wildcard tests/payloads/*.c)
PAYLOAD_BIN := $(PAYLOAD_SRC:tests/payloads/%.c=$(BUILD)/payloads/%.elf)
PAYLOAD_CFLAGS := -std=gnu11 -Wall -Wextra -Werror -O2 -ffreestanding -fno-stack-protector -fno-pic -fno-pie -mno-red-zone \
	-mgeneral-regs-only -fno-asynchronous-unwind-tables -nostdlib -static -no-pie -Wl,--build-id=none -Wl,-T,tests/payloads/payload.ld

# Attacker programs for tests/e2e/test_attacks.py: static, so they run in any container rootfs.
ATTACKER_SRC := $(wildcard tests/attackers/*.c)
ATTACKER_BIN := $(ATTACKER_SRC:tests/attackers/%.c=$(BUILD)/attackers/%)

# Guest tools for the Linux guests capsule boots in the testbed (vsock, virtio checks):
# static, copied into the busybox initramfs by tests/testbed/mkguestinitramfs.
GUEST_SRC := $(wildcard tests/guest/*.c)
GUEST_BIN := $(GUEST_SRC:tests/guest/%.c=$(BUILD)/guest/%)

.PHONY: all asan check clean deps
all: $(BUILD)/capsule $(UNIT_BIN) $(PAYLOAD_BIN) $(ATTACKER_BIN) $(GUEST_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/payloads/%.elf: tests/payloads/%.c tests/payloads/start.S $(wildcard tests/payloads/*.h) tests/payloads/payload.ld
	@mkdir -p $(dir $@)
	$(CC) $(PAYLOAD_CFLAGS) -o $@ tests/payloads/start.S $<

$(BUILD)/attackers/%: tests/attackers/%.c tests/attackers/attack.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -O2 -static -o $@ $<

$(BUILD)/guest/%: tests/guest/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -O2 -static -o $@ $<

$(BUILD)/libcapsule.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# --whole-archive: devices register themselves from constructors (DEVICE_REGISTER)
# and nothing references them by name, so a plain archive link would drop them.
WHOLE_LIB = -Wl,--whole-archive $(BUILD)/libcapsule.a -Wl,--no-whole-archive

$(BUILD)/capsule: $(CLI_OBJ) $(BUILD)/libcapsule.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(WHOLE_LIB) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(UNIT_HELPER_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/libcapsule.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(WHOLE_LIB) $(LDLIBS)

asan:
	$(MAKE) BUILD=build/asan OPT=-O1 SAN_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"

check: all asan
	tests/run

deps:
	scripts/install-deps

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---- fuzzing: `make fuzz` ----------------------------------------------------
# libFuzzer targets (tests/fuzz/fuzz_*.c) for the parsers that take hostile
# input. clang compiles the library again into $(FUZZ_DIR)/obj: the gcc objects
# have no coverage instrumentation. -Werror stays with the gcc build, which is the
# one that gates warnings; clang's extra ones must not break fuzzing.
#
# `make fuzz` runs every target for FUZZ_SECONDS (not part of `make check`, whose
# tests/fuzz/test_fuzz.py runs each briefly on a copy of the corpus) and merges the
# inputs that reach new coverage into the corpus kept in the repository,
# tests/fuzz/corpus/<target>/: commit what it adds. A crash, leak or sanitizer
# report stops it with the input in $(FUZZ_DIR)/<target>-crash-*.
# `make fuzz-build` only builds the targets.
FUZZ_DIR := $(BUILD)/fuzz
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 300
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=gnu11 -Wall -Wextra -D_GNU_SOURCE -Ulinux -Isrc -g -O1 $(FUZZ_SAN) $(PKG_CFLAGS) -MMD -MP
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_TARGETS := $(FUZZ_SRC:tests/fuzz/%.c=%)
FUZZ_BIN := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/%)
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
# The device targets bring their devices up on the unit tests' machine, drive virtio-mmio with
# their mmio_driver.c, and give the vsock muxer their fake host.
FUZZ_HELPER_OBJ := $(addprefix $(FUZZ_DIR)/obj/tests/unit/,machine.o mmio_driver.o vsock_host.o)

.PHONY: fuzz fuzz-build
.SECONDARY: $(FUZZ_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
fuzz-build: $(FUZZ_BIN)

# New inputs collect in a scratch directory first (the first corpus directory is
# the one libFuzzer writes to); -merge=1 then keeps only those that add coverage.
fuzz: $(FUZZ_BIN)
	@set -e; for t in $(FUZZ_TARGETS); do \
		new=$(FUZZ_DIR)/new/$$t; rm -rf $$new; mkdir -p $$new tests/fuzz/corpus/$$t; \
		dict=; [ ! -f tests/fuzz/$$t.dict ] || dict=-dict=tests/fuzz/$$t.dict; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		$(FUZZ_DIR)/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_DIR)/$$t- $$dict $$new tests/fuzz/corpus/$$t 2>$(FUZZ_DIR)/$$t.log || \
			{ tail -n 60 $(FUZZ_DIR)/$$t.log; echo "fuzz: $$t failed (log: $(FUZZ_DIR)/$$t.log)"; exit 1; }; \
		before=$$(ls tests/fuzz/corpus/$$t | wc -l); \
		$(FUZZ_DIR)/$$t -merge=1 tests/fuzz/corpus/$$t $$new 2>>$(FUZZ_DIR)/$$t.log; \
		echo "fuzz: $$t clean; corpus $$before -> $$(ls tests/fuzz/corpus/$$t | wc -l) inputs"; \
	done

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_DIR)/libcapsule.a: $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

# --whole-archive for the self-registering devices, as for build/capsule.
$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o $(FUZZ_HELPER_OBJ) $(FUZZ_DIR)/libcapsule.a
	$(FUZZ_CC) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $< $(FUZZ_HELPER_OBJ) -Wl,--whole-archive $(FUZZ_DIR)/libcapsule.a \
		-Wl,--no-whole-archive $(LDLIBS)

-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)
