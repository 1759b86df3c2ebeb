// Pieces shared by checkpoint_write.cpp and checkpoint_read.cpp (not a public header).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.hpp"
#include "io/hdf5_util.hpp"

namespace furnace::io::ckpt {

inline constexpr const char* kFormat = "furnace-checkpoint";
inline constexpr int kFormatVersion = 1;
inline constexpr hsize_t kAlignThreshold = 64 << 10;  // objects >= 64 KiB are aligned

[[noreturn]] void fail(const std::string& path, const std::string& what);

// Runs f; returns the failure (a CheckpointError's or an HDF5 error's message, naming
// the file) instead of throwing it.
template <class F>
std::optional<std::string> error_of(const std::string& path, F&& f) {
  try {
    f();
    return std::nullopt;
  } catch (const CheckpointError& e) {
    return std::string(e.what());
  } catch (const h5::Error& e) {
    return "checkpoint '" + path + "': " + e.what();
  } catch (const std::exception& e) {
    return "checkpoint '" + path + "': " + e.what();
  }
}

// Every rank of comm throws the same CheckpointError when any rank has an error.
void agree(MPI_Comm comm, const std::optional<std::string>& error);

// A file-access property list for the MPI-IO driver on comm, with collective metadata
// operations (and alignment when > 0).
h5::Handle mpio_fapl(MPI_Comm comm, std::size_t alignment);
h5::Handle dxpl(bool collective);

std::string model_path(const std::string& name);
std::string optim_path(const std::string& name, const char* which);  // which: exp_avg | exp_avg_sq
std::string shape_str(const std::vector<hsize_t>& s);
std::vector<hsize_t> global_dims(const memory::ParamInfo& p);

// This rank's slab of p in the global dataset space (a copy of `space` with the slab
// selected): rows [global_offset0, + shape[0]) for Expert tensors, everything for Dense.
// Throws CheckpointError when the local shape does not fit the global one.
void select_slab(hid_t space, const memory::ParamInfo& p, const std::string& path);

}  // namespace furnace::io::ckpt
