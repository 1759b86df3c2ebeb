// `furnace reference-dump`: everything tests/reference/check.py needs to recompute
// one run in PyTorch: initial weights, the batches, the learning rates, step-0
// logits/losses/gradients and the losses of S AdamW steps. Single process.
#include <mpi.h>

#include <cstdio>
#include <memory>

#include "app/commands.hpp"
#include "comm/groups.hpp"
#include "io/config.hpp"
#include "io/hdf5_util.hpp"
#include "train/trainer.hpp"

namespace furnace::app {

namespace {

using io::h5::Handle;

void write(hid_t loc, const std::string& name, hid_t type, const std::vector<hsize_t>& dims,
           const void* data) {
  // No dims: a scalar dataset.
  Handle space(H5_CHECKED(dims.empty() ? H5Screate(H5S_SCALAR)
                                       : H5Screate_simple(int(dims.size()), dims.data(), nullptr)),
               H5Sclose);
  Handle lcpl(H5_CHECKED(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
  H5_CHECKED(H5Pset_create_intermediate_group(lcpl, 1));
  Handle d(H5_CHECKED(H5Dcreate2(loc, name.c_str(), type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT)),
           H5Dclose);
  H5_CHECKED(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data));
}

// Every tensor of `buf` (params or grads) under `group`/<name>, in logical shape.
void write_tensors(hid_t file, const std::string& group, const memory::StateStore& ps,
                   kernels::View1<float> buf) {
  for (int i = 0; i < int(ps.infos().size()); ++i) {
    const auto& p = ps.info(i);
    std::vector<hsize_t> dims(p.shape.begin(), p.shape.end());
    auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), ps.slice(buf, i));
    write(file, group + "/" + p.name, H5T_NATIVE_FLOAT, dims, host.data());
  }
}

}  // namespace

int cmd_reference_dump(const DumpOptions& opt) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (world != 1) {
    std::fprintf(stderr, "furnace: reference-dump runs as a single process (got %d)\n", world);
    return kBadConfig;
  }
  io::Config cfg;
  try {
    cfg = io::load_config(opt.config, opt.overrides);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "furnace: %s\n", e.what());
    return kBadConfig;
  }
  try {
    comm::Groups groups(MPI_COMM_WORLD, 1, 0);
    train::Trainer tr(cfg, groups);
    auto& ps = tr.params();
    const int B = cfg.train.batch_size, T = cfg.model.seq_len, V = cfg.model.vocab_size;
    const std::string tmp = opt.out + ".tmp";
    Handle f(H5_CHECKED(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)), H5Fclose);
    io::h5::write_attr(f, "config_json", io::to_json(cfg));
    write_tensors(f, "params", ps, ps.params());
    std::vector<std::int32_t> batches, batch;
    std::vector<double> lrs, ce, total;
    for (int s = 0; s < opt.steps; ++s) {
      auto r = tr.compute_gradients(s, &batch);
      batches.insert(batches.end(), batch.begin(), batch.end());
      ce.push_back(r.ce);
      total.push_back(r.total);
      if (s == 0) {
        auto logits = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), tr.model().logits());
        write(f, "step0/logits", H5T_NATIVE_FLOAT, {hsize_t(B) * T, hsize_t(V)}, logits.data());
        write(f, "step0/ce", H5T_NATIVE_DOUBLE, {}, &r.ce);
        write(f, "step0/loss", H5T_NATIVE_DOUBLE, {}, &r.total);
        write_tensors(f, "step0/grads", ps, ps.grads());
      }
      lrs.push_back(tr.apply_update(s, r));
    }
    const hsize_t S = hsize_t(opt.steps);
    write(f, "batches", H5T_NATIVE_INT32, {S, hsize_t(B), hsize_t(T + 1)}, batches.data());
    write(f, "lrs", H5T_NATIVE_DOUBLE, {S}, lrs.data());
    write(f, "losses", H5T_NATIVE_DOUBLE, {S}, ce.data());
    write(f, "total_losses", H5T_NATIVE_DOUBLE, {S}, total.data());
    f.reset();
    if (std::rename(tmp.c_str(), opt.out.c_str()) != 0)
      throw std::runtime_error("cannot rename " + tmp + " to " + opt.out);
    std::printf("wrote %s: %zu tensors, %d steps, step-0 ce %.6f\n", opt.out.c_str(),
                ps.infos().size(), opt.steps, ce.front());
    return kOk;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "furnace: %s\n", e.what());
    return kBadData;
  }
}

}  // namespace furnace::app
