// Checkpoint integrity: a flipped bit, a non-finite value, a negative second moment,
// an attribute or dataset of the wrong shape, a group in place of a tensor and a
// missing tensor are refused by the load on every rank (the same message everywhere)
// and by inspect_checkpoint (what `furnace ckpt inspect --verify` runs), which must
// find everything the load finds. Runs at -n 1, 2, 4.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <hdf5.h>
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>

#include "checkpoint_testing.hpp"

using namespace furnace;
using namespace furnace::io;
using namespace furnace::testing::ckpt;
using furnace::testing::world_rank;
using furnace::testing::world_size;

namespace {

class MpiCheckpointIntegrity : public furnace::testing::MpiScratchDirTest {
 protected:
  comm::Groups g{MPI_COMM_WORLD, world_size(), 0};

  std::string write_filled(const std::function<void(memory::StateStore&)>& edit = {}) {
    auto ps = make_store(g);
    fill(*ps);
    if (edit) edit(*ps);
    return write_checkpoint(dir(), *ps, buffers(*ps, 1), meta_for(g, 1), g, {.keep = 3, .alignment = 4096});
  }
  // Rank 0 changes the file with the serial HDF5 API (or raw bytes); everyone waits.
  void on_rank0(const std::function<void()>& f) {
    if (world_rank() == 0) f();
    MPI_Barrier(MPI_COMM_WORLD);
  }
  // The load and the inspection both refuse the file, naming `parts`.
  void expect_refused(const std::string& path, const std::vector<std::string>& parts, const std::string& where) {
    auto dst = make_store(g);
    expect_ckpt_error([&] { read_checkpoint(path, *dst, g, nullptr); }, parts, where + " (load)");
    expect_ckpt_error([&] { inspect_checkpoint(path, true); }, parts, where + " (inspect --verify)");
  }
};

// Byte offset of dataset `name`'s data in the file (contiguous layout).
haddr_t data_offset(const std::string& path, const std::string& name) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, name.c_str(), H5P_DEFAULT);
  const haddr_t off = H5Dget_offset(d);
  H5Dclose(d);
  H5Fclose(f);
  return off;
}

void flip_bit(const std::string& path, haddr_t byte, int bit) {
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  unsigned char c = 0;
  ASSERT_EQ(::pread(fd, &c, 1, off_t(byte)), 1);
  c ^= (unsigned char)(1u << bit);
  ASSERT_EQ(::pwrite(fd, &c, 1, off_t(byte)), 1);
  ::close(fd);
}

// Opens the file read-write with the serial API, runs f on it, closes it.
void edit_h5(const std::string& path, const std::function<void(hid_t)>& f) {
  hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  f(file);
  H5Fclose(file);
}

// Replaces attribute `name` of obj by a 1-D one of n elements.
void rewrite_attr(hid_t obj, const char* name, hid_t file_type, hid_t mem_type, const void* data, hsize_t n) {
  H5Adelete(obj, name);
  hid_t space = H5Screate_simple(1, &n, nullptr);
  hid_t a = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, mem_type, data);
  H5Aclose(a);
  H5Sclose(space);
}

}  // namespace

TEST_F(MpiCheckpointIntegrity, IntactFilePassesLoadAndInspect) {
  const std::string path = write_filled();
  auto dst = make_store(g);
  read_checkpoint(path, *dst, g, nullptr);
  expect_filled(*dst, "intact file");
  const auto report = inspect_checkpoint(path, true);
  EXPECT_EQ(report.header.tensors.size(), dst->infos().size());
  EXPECT_EQ(report.datasets.size(), 3 * dst->infos().size());
}

// One flipped bit in an expert's slab (expert 3: the last rank's at -n 4) is found by
// the rank that reads it; the others learn it in the agreement.
TEST_F(MpiCheckpointIntegrity, FlippedBitNamesDatasetAndExpert) {
  const std::string path = write_filled();
  // [E=4, 6, 5] floats: expert 3 starts at element 3*30; flip a high exponent bit.
  on_rank0([&] { flip_bit(path, data_offset(path, "/model/layers.1.moe.w1") + 4 * (3 * 30 + 7) + 3, 6); });
  expect_refused(path, {path, "/model/layers.1.moe.w1", "expert 3", "checksum"}, "flipped bit");
}

TEST_F(MpiCheckpointIntegrity, FlippedBitInDenseTensor) {
  const std::string path = write_filled();
  on_rank0([&] { flip_bit(path, data_offset(path, "/optim/embed/exp_avg") + 17, 0); });
  expect_refused(path, {"/optim/embed/exp_avg", "checksum"}, "flipped bit, dense");
}

// Checksums match (the writer hashed these values): the value checks must refuse them.
TEST_F(MpiCheckpointIntegrity, NonFiniteParameterAndNegativeMomentRefused) {
  const std::string nan_path = write_filled([](memory::StateStore& ps) {
    const auto& p = ps.info(ps.find("layers.1.moe.b1"));
    ps.params().data()[p.offset + p.size - 1] = std::numeric_limits<float>::quiet_NaN();
  });
  expect_refused(nan_path, {"/model/layers.1.moe.b1", "non-finite"}, "NaN parameter");
  const std::string neg_path = write_filled([](memory::StateStore& ps) {
    ps.exp_avg_sq().data()[ps.info(ps.find("embed")).offset + 3] = -1.0f;
  });
  expect_refused(neg_path, {"/optim/embed/exp_avg_sq", "negative second moments"}, "negative v");
}

// The heap overflow of issue 7: a /meta attribute of an unexpected shape.
TEST_F(MpiCheckpointIntegrity, MetaAttributeOfWrongShapeRefused) {
  const std::string path = write_filled();
  on_rank0([&] {
    edit_h5(path, [](hid_t file) {
      hid_t m = H5Oopen(file, "meta", H5P_DEFAULT);
      const std::vector<long long> big(4096, 7);
      rewrite_attr(m, "step", H5T_STD_I64LE, H5T_NATIVE_LLONG, big.data(), big.size());
      H5Oclose(m);
    });
  });
  expect_refused(path, {path, "step", "4096 elements"}, "meta attribute shape");
}

TEST_F(MpiCheckpointIntegrity, ConfigJsonOfWrongShapeRefused) {
  const std::string path = write_filled();
  on_rank0([&] {
    edit_h5(path, [](hid_t file) {
      H5Ldelete(file, "/meta/config_json", H5P_DEFAULT);
      const hsize_t n = 64;
      hid_t type = H5Tcopy(H5T_C_S1);
      H5Tset_size(type, 8);
      hid_t space = H5Screate_simple(1, &n, nullptr);
      hid_t d = H5Dcreate2(file, "/meta/config_json", type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
      std::vector<char> text(8 * n, 'x');
      H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, text.data());
      H5Dclose(d);
      H5Sclose(space);
      H5Tclose(type);
    });
  });
  expect_refused(path, {path, "config_json", "not one fixed-length string"}, "config_json shape");
}

TEST_F(MpiCheckpointIntegrity, GroupInPlaceOfTensorAndMissingTensorRefused) {
  const std::string path = write_filled();
  on_rank0([&] {
    edit_h5(path, [](hid_t file) {
      H5Ldelete(file, "/model/final_norm.weight", H5P_DEFAULT);
      H5Gclose(H5Gcreate2(file, "/model/final_norm.weight", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    });
  });
  expect_refused(path, {"/model/final_norm.weight", "not a dataset"}, "group for a tensor");
  const std::string fresh = write_filled();
  on_rank0([&] { edit_h5(fresh, [](hid_t file) { H5Ldelete(file, "/optim/layers.1.moe.b1/exp_avg_sq", H5P_DEFAULT); }); });
  expect_refused(fresh, {"no dataset /optim/layers.1.moe.b1/exp_avg_sq"}, "missing moment");
}

TEST_F(MpiCheckpointIntegrity, ChecksumAttributeOfWrongLengthRefused) {
  const std::string path = write_filled();
  on_rank0([&] {
    edit_h5(path, [](hid_t file) {
      hid_t d = H5Dopen2(file, "/model/layers.1.moe.w1", H5P_DEFAULT);
      const unsigned long long v[2] = {1, 2};  // 4 experts need 4
      rewrite_attr(d, "xxh3_64", H5T_STD_U64LE, H5T_NATIVE_ULLONG, v, 2);
      H5Dclose(d);
    });
  });
  expect_refused(path, {"/model/layers.1.moe.w1", "checksum attribute", "2 elements"}, "checksum length");
}
