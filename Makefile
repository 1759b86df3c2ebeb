# Furnace build. `make` builds build/bin/furnace and build/lib/libfurnace.a;
# `make test` runs every test; `make train` is the main job (see README.md).
#
# Knobs (all optional):
#   KOKKOS_ROOT=/path   an installed Kokkos 4.x (include/, lib/); default: Debian's
#                       Kokkos 3.4 from libtrilinos-kokkos-dev (Serial backend)
#   MPICXX=mpicxx       MPI C++ compiler wrapper (MPICH)
#   CXXFLAGS=...        replaces the default optimisation flags (-O3 -march=native -fno-math-errno -g)
#   NPROC=N             parallel compile jobs (default: all cores)
#   CUDA=1              reserved for the cuBLAS/CUDA build (not yet supported)
#   PREFIX=/usr/local   for `make install`

SHELL := /bin/bash
MPICXX   ?= mpicxx
PREFIX   ?= /usr/local
NPROC    ?= $(shell nproc)
CXXFLAGS ?= -O3 -march=native -fno-math-errno -g
BUILD    ?= build

ifeq ($(CUDA),1)
$(error CUDA=1: the CUDA/cuBLAS build is not implemented yet; build without CUDA=1)
endif

ifdef KOKKOS_ROOT
  KOKKOS_INC  := -isystem $(KOKKOS_ROOT)/include
  KOKKOS_LIBS := -L$(KOKKOS_ROOT)/lib -L$(KOKKOS_ROOT)/lib64 -Wl,-rpath,$(KOKKOS_ROOT)/lib \
                 -Wl,-rpath,$(KOKKOS_ROOT)/lib64 -lkokkoscore -ldl
  KOKKOS_CFG  := $(KOKKOS_ROOT)/include/KokkosCore_config.h
  KOKKOS_DESC := Kokkos at $(KOKKOS_ROOT)
else
  KOKKOS_INC  := -isystem /usr/include/trilinos
  KOKKOS_LIBS := -ltrilinos_kokkoscore -ldl
  KOKKOS_CFG  := /usr/include/trilinos/KokkosCore_config.h
  KOKKOS_DESC := Debian Kokkos (libtrilinos-kokkos-dev)
endif
KOKKOS_OPENMP := $(shell grep -qs 'define KOKKOS_ENABLE_OPENMP' $(KOKKOS_CFG) && echo -fopenmp)

HDF5_INC  := $(shell pkg-config --cflags hdf5-mpich 2>/dev/null)
HDF5_LIBS := $(shell pkg-config --libs hdf5-mpich 2>/dev/null)
BLAS_INC  := $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS := -lopenblas
# oneDNN (bf16 GEMMs) lives in a plugin the binary loads on first use (gemm16.cpp):
# oneDNN brings libgomp, which must not load (and parse OMP_*) in runs that never use it.
ONEDNN_LIBS := -ldnnl -lgomp
PLUGIN_SRC := src/kernels/onednn_plugin.cpp
PLUGIN     := $(BUILD)/lib/libfurnace_onednn.so

GIT_REV  := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
CPPFLAGS := -Isrc $(KOKKOS_INC) $(HDF5_INC) $(BLAS_INC) -MMD -MP \
            -DFURNACE_VERSION=\"$(shell cat VERSION)\" \
            -DFURNACE_GIT_REV=\"$(GIT_REV)\"
ALLCXX   := -std=c++20 -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers $(KOKKOS_OPENMP) $(CXXFLAGS)
LDLIBS   := $(KOKKOS_LIBS) $(HDF5_LIBS) $(BLAS_LIBS) $(KOKKOS_OPENMP) -ldl -lpthread

LIB_SRC  := $(shell find src -name '*.cpp' ! -path 'src/app/main.cpp' ! -path '$(PLUGIN_SRC)' | sort)
APP_MAIN := src/app/main.cpp
TEST_SRC := $(shell find tests/unit -name '*.cpp' 2>/dev/null | sort)
LIB_OBJ  := $(LIB_SRC:%.cpp=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.cpp=$(BUILD)/obj/%.o)
LIB      := $(BUILD)/lib/libfurnace.a
BIN      := $(BUILD)/bin/furnace
TESTBIN  := $(BUILD)/bin/furnace_tests

.PHONY: all deps test unit-tests train data clean install bench show-deps
all: show-deps
	@command -v $(MPICXX) > /dev/null || { echo "furnace: $(MPICXX) not found: run 'make deps' first (installs MPICH, HDF5, OpenBLAS, Kokkos from Debian), or set MPICXX=" >&2; exit 1; }
	@$(MAKE) --no-print-directory -j$(NPROC) $(BIN) $(PLUGIN)

deps:
	@bash scripts/install-deps.sh

show-deps:
	@echo "furnace: $(KOKKOS_DESC); MPI $$($(MPICXX) -show 2>/dev/null | grep -o 'mpich' | head -1 || echo '?');" \
	      "HDF5 $(if $(HDF5_LIBS),parallel (mpich),NOT FOUND); BLAS OpenBLAS; CXX $(MPICXX)"

# The revision is compiled into the banner and every checkpoint's provenance: the
# sources that print it rebuild when HEAD moves (a stamp named for the revision), so an
# incremental build never reports the commit it was first built at.
REV_STAMP := $(BUILD)/gen/git_rev.$(GIT_REV)
$(REV_STAMP):
	@mkdir -p $(@D) && rm -f $(BUILD)/gen/git_rev.* && touch $@
$(BUILD)/obj/src/app/main.o $(BUILD)/obj/src/app/cmd_train.o $(BUILD)/obj/src/io/checkpoint_write.o: $(REV_STAMP)

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(@D)
	@echo "  CXX  $<"
	@$(MPICXX) $(CPPFLAGS) $(ALLCXX) -c $< -o $@

# The archive also depends on the list of its members, so that a source file added
# after the last build (whose object may be older than the archive) is archived too.
OBJ_LIST := $(BUILD)/lib/objects.list
$(shell mkdir -p $(BUILD)/lib; echo '$(LIB_OBJ)' | cmp -s - $(OBJ_LIST) || echo '$(LIB_OBJ)' > $(OBJ_LIST))

$(LIB): $(LIB_OBJ) $(OBJ_LIST)
	@mkdir -p $(@D)
	@rm -f $@ && ar rcs $@ $(LIB_OBJ)

$(BIN): $(BUILD)/obj/$(APP_MAIN:.cpp=.o) $(LIB)
	@mkdir -p $(@D)
	@echo "  LINK $@"
	@$(MPICXX) $(ALLCXX) $^ -o $@ $(LDLIBS)

$(PLUGIN): $(PLUGIN_SRC)
	@mkdir -p $(@D) $(BUILD)/obj/plugin
	@echo "  SO   $@"
	@$(MPICXX) $(CPPFLAGS) -MF $(BUILD)/obj/plugin/onednn.d $(ALLCXX) -fPIC -shared $< -o $@ $(ONEDNN_LIBS)

$(TESTBIN): $(TEST_OBJ) $(LIB)
	@mkdir -p $(@D)
	@echo "  LINK $@"
	@$(MPICXX) $(ALLCXX) $^ -o $@ $(LDLIBS) -lgtest

# The whole suite: unit tests, MPI tests, end-to-end runs, PyTorch reference.
test: deps
	@$(MAKE) --no-print-directory -j$(NPROC) $(BIN) $(TESTBIN) $(PLUGIN)
	@bash tests/run_all.sh

unit-tests: $(TESTBIN) $(PLUGIN)
	@$(TESTBIN)

# The main job: prepare the bundled corpus and train the default model.
train: deps
	@$(MAKE) --no-print-directory all
	@bash scripts/train-default.sh

data: all
	@$(BIN) data prepare

bench: all
	@$(BIN) bench kernels

install: all
	install -d $(PREFIX)/bin $(PREFIX)/lib $(PREFIX)/share/furnace/configs
	install -m 755 $(BIN) $(PREFIX)/bin/furnace
	install -m 644 $(LIB) $(PREFIX)/lib/
	install -m 755 $(PLUGIN) $(PREFIX)/lib/
	install -m 644 configs/*.toml $(PREFIX)/share/furnace/configs/

clean:
	rm -rf $(BUILD)

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/obj/src/app/main.d $(BUILD)/obj/plugin/onednn.d
