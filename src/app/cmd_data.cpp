#include <mpi.h>

#include <cstdio>

#include "app/commands.hpp"
#include "io/dataset.hpp"

namespace furnace::app {

int cmd_data_prepare(const PrepareOptions& opt) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) return kOk;  // one writer; run it as a single process
  try {
    const auto inputs = opt.inputs.empty() ? io::default_corpus_files() : opt.inputs;
    const auto r = io::prepare_text_data(inputs, opt.out_dir, opt.valid_fraction);
    std::printf("prepared %s: %lld train tokens, %lld validation tokens\n", opt.out_dir.c_str(),
                static_cast<long long>(r.train_tokens), static_cast<long long>(r.valid_tokens));
    return kOk;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "furnace: %s\n", e.what());
    return kBadData;
  }
}

}  // namespace furnace::app
