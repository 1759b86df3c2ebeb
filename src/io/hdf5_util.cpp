#include "io/hdf5_util.hpp"

#include <cstring>

#include "comm/mpi_check.hpp"

namespace furnace::io::h5 {

std::recursive_mutex& library_mutex() {
  static std::recursive_mutex m;
  return m;
}

void silence() {
  static const bool done = [] { return H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr) >= 0; }();
  (void)done;
}

std::string last_error() {
  std::string desc;
  // Walking upward starts at the innermost record: the most specific reason.
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
        if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
        return 0;
      },
      &desc);
  H5Eclear2(H5E_DEFAULT);
  return desc;
}

void fail(const char* call, const char* file, int line) {
  std::string name(call, std::strcspn(call, "("));  // "H5Dread", not its arguments
  std::string reason = last_error();
  throw Error("HDF5 " + name + " failed (" + file + ":" + std::to_string(line) + ")" +
              (reason.empty() ? "" : ": " + reason));
}

namespace {
void write_scalar_attr(hid_t obj, const char* name, hid_t type, const void* value) {
  Handle space(H5_CHECKED(H5Screate(H5S_SCALAR)), H5Sclose);
  Handle attr(H5_CHECKED(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
  H5_CHECKED(H5Awrite(attr, type, value));
}
}  // namespace

void write_attr(hid_t obj, const char* name, int value) {
  write_scalar_attr(obj, name, H5T_NATIVE_INT, &value);
}

void write_attr(hid_t obj, const char* name, const std::string& value) {
  Handle type(H5_CHECKED(H5Tcopy(H5T_C_S1)), H5Tclose);
  H5_CHECKED(H5Tset_size(type, value.empty() ? 1 : value.size()));  // size 0 is not allowed
  write_scalar_attr(obj, name, type, value.empty() ? "" : value.c_str());
}

std::optional<int> read_int_attr(hid_t obj, const char* name) {
  if (H5_CHECKED(H5Aexists(obj, name)) <= 0) return std::nullopt;
  Handle attr(H5_CHECKED(H5Aopen(obj, name, H5P_DEFAULT)), H5Aclose);
  int value = 0;
  H5_CHECKED(H5Aread(attr, H5T_NATIVE_INT, &value));
  return value;
}

void write_i64_attr(hid_t obj, const char* name, long long value) {
  write_scalar_attr(obj, name, H5T_NATIVE_LLONG, &value);
}

void write_u64_attr(hid_t obj, const char* name, unsigned long long value) {
  write_scalar_attr(obj, name, H5T_NATIVE_ULLONG, &value);
}

namespace {
template <class T>
std::optional<T> read_scalar_attr(hid_t obj, const char* name, hid_t mem_type) {
  if (H5_CHECKED(H5Aexists(obj, name)) <= 0) return std::nullopt;
  Handle attr(H5_CHECKED(H5Aopen(obj, name, H5P_DEFAULT)), H5Aclose);
  T value{};
  H5_CHECKED(H5Aread(attr, mem_type, &value));
  return value;
}
}  // namespace

std::optional<long long> read_i64_attr(hid_t obj, const char* name) {
  return read_scalar_attr<long long>(obj, name, H5T_NATIVE_LLONG);
}

std::optional<unsigned long long> read_u64_attr(hid_t obj, const char* name) {
  return read_scalar_attr<unsigned long long>(obj, name, H5T_NATIVE_ULLONG);
}

std::optional<std::string> read_string_attr(hid_t obj, const char* name) {
  if (H5_CHECKED(H5Aexists(obj, name)) <= 0) return std::nullopt;
  Handle attr(H5_CHECKED(H5Aopen(obj, name, H5P_DEFAULT)), H5Aclose);
  Handle type(H5_CHECKED(H5Aget_type(attr)), H5Tclose);
  if (H5Tget_class(type) != H5T_STRING || H5_CHECKED(H5Tis_variable_str(type)) > 0)
    throw Error(std::string("attribute ") + name + " is not a fixed-length string");
  std::string value(H5Tget_size(type), '\0');
  H5_CHECKED(H5Aread(attr, type, value.data()));
  value.resize(std::strlen(value.c_str()));  // null-padded or null-terminated
  return value;
}

std::optional<std::string> agree_on_error(MPI_Comm comm, const std::optional<std::string>& error) {
  int mpi_up = 0;
  mpiCheck(MPI_Initialized(&mpi_up));
  if (!mpi_up) return error;
  int rank = 0, size = 1;
  mpiCheck(MPI_Comm_rank(comm, &rank));
  mpiCheck(MPI_Comm_size(comm, &size));
  int mine = error ? rank : size, first = size;
  mpiCheck(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == size) return std::nullopt;
  std::string message = rank == first ? *error : std::string();
  int len = int(message.size());
  mpiCheck(MPI_Bcast(&len, 1, MPI_INT, first, comm));
  message.resize(std::size_t(len));
  mpiCheck(MPI_Bcast(message.data(), len, MPI_CHAR, first, comm));
  return message;
}

}  // namespace furnace::io::h5
