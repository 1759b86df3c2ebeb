#include "io/hdf5_util.hpp"

#include <atomic>
#include <cstring>

#include "comm/agree.hpp"

namespace furnace::io::h5 {

std::recursive_mutex& library_mutex() {
  static std::recursive_mutex m;
  return m;
}

void init() { H5dont_atexit(); }

namespace {
std::atomic<bool> g_abandoned{false};
}

void abandon(Handle& file) {
  if (file.valid()) g_abandoned = true;
  file.release();
}

bool abandoned() { return g_abandoned; }

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
  // MPI-IO error strings span lines ("error stack:\n..."); an error is one line.
  for (char& c : reason)
    if (c == '\n' || c == '\r') c = ' ';
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

void write_i64_attr(hid_t obj, const char* name, long long value) {
  write_scalar_attr(obj, name, H5T_NATIVE_LLONG, &value);
}

void write_u64_attr(hid_t obj, const char* name, unsigned long long value) {
  write_scalar_attr(obj, name, H5T_NATIVE_ULLONG, &value);
}

namespace {
// The attribute's element count and type, checked against what the caller's buffer holds.
Handle open_checked_attr(hid_t obj, const char* name, H5T_class_t cls, std::size_t elems, std::size_t max_size) {
  Handle attr(H5_CHECKED(H5Aopen(obj, name, H5P_DEFAULT)), H5Aclose);
  Handle space(H5_CHECKED(H5Aget_space(attr)), H5Sclose);
  const hssize_t n = H5_CHECKED(H5Sget_simple_extent_npoints(space));
  Handle type(H5_CHECKED(H5Aget_type(attr)), H5Tclose);
  if (n != hssize_t(elems))
    throw Error(std::string("attribute ") + name + " holds " + std::to_string(n) + " elements, expected " +
                std::to_string(elems));
  if (H5Tget_class(type) != cls || H5Tget_size(type) > max_size)
    throw Error(std::string("attribute ") + name + " has an unexpected type (class " +
                std::to_string(int(H5Tget_class(type))) + ", " + std::to_string(H5Tget_size(type)) + " bytes)");
  return attr;
}

template <class T>
std::optional<T> read_scalar_attr(hid_t obj, const char* name, hid_t mem_type) {
  if (H5_CHECKED(H5Aexists(obj, name)) <= 0) return std::nullopt;
  Handle attr = open_checked_attr(obj, name, H5T_INTEGER, 1, 8);
  T value{};
  H5_CHECKED(H5Aread(attr, mem_type, &value));
  return value;
}
}  // namespace

std::optional<int> read_int_attr(hid_t obj, const char* name) {
  return read_scalar_attr<int>(obj, name, H5T_NATIVE_INT);
}

std::optional<long long> read_i64_attr(hid_t obj, const char* name) {
  return read_scalar_attr<long long>(obj, name, H5T_NATIVE_LLONG);
}

std::optional<unsigned long long> read_u64_attr(hid_t obj, const char* name) {
  return read_scalar_attr<unsigned long long>(obj, name, H5T_NATIVE_ULLONG);
}

std::optional<std::string> read_string_attr(hid_t obj, const char* name) {
  if (H5_CHECKED(H5Aexists(obj, name)) <= 0) return std::nullopt;
  Handle attr = open_checked_attr(obj, name, H5T_STRING, 1, kMaxStringAttr);
  Handle type(H5_CHECKED(H5Aget_type(attr)), H5Tclose);
  if (H5_CHECKED(H5Tis_variable_str(type)) > 0)
    throw Error(std::string("attribute ") + name + " is not a fixed-length string");
  std::string value(H5Tget_size(type), '\0');
  H5_CHECKED(H5Aread(attr, type, value.data()));
  value.resize(std::strlen(value.c_str()));  // null-padded or null-terminated
  return value;
}

void write_u64_array_attr(hid_t obj, const char* name, const std::vector<unsigned long long>& values) {
  const hsize_t n = values.size();
  Handle space(H5_CHECKED(H5Screate_simple(1, &n, nullptr)), H5Sclose);
  Handle attr(H5_CHECKED(H5Acreate2(obj, name, H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT)), H5Aclose);
  H5_CHECKED(H5Awrite(attr, H5T_NATIVE_ULLONG, values.data()));
}

std::optional<std::vector<unsigned long long>> read_u64_array_attr(hid_t obj, const char* name, std::size_t count) {
  if (H5_CHECKED(H5Aexists(obj, name)) <= 0) return std::nullopt;
  Handle attr = open_checked_attr(obj, name, H5T_INTEGER, count, 8);
  std::vector<unsigned long long> values(count);
  H5_CHECKED(H5Aread(attr, H5T_NATIVE_ULLONG, values.data()));
  return values;
}

std::string read_string_dataset(hid_t loc, const char* name, std::size_t max_bytes) {
  Handle d(H5_CHECKED(H5Dopen2(loc, name, H5P_DEFAULT)), H5Dclose);
  Handle type(H5_CHECKED(H5Dget_type(d)), H5Tclose);
  Handle space(H5_CHECKED(H5Dget_space(d)), H5Sclose);
  if (H5_CHECKED(H5Sget_simple_extent_npoints(space)) != 1 || H5Tget_class(type) != H5T_STRING ||
      H5_CHECKED(H5Tis_variable_str(type)) > 0)
    throw Error(std::string("dataset ") + name + " is not one fixed-length string");
  if (H5Tget_size(type) > max_bytes)
    throw Error(std::string("dataset ") + name + " is a string of " + std::to_string(H5Tget_size(type)) +
                " bytes, more than the " + std::to_string(max_bytes) + " allowed");
  std::string text(H5Tget_size(type), '\0');
  H5_CHECKED(H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, text.data()));
  text.resize(std::strlen(text.c_str()));
  return text;
}

std::optional<std::string> agree_on_error(MPI_Comm comm, const std::optional<std::string>& error,
                                          int abort_code) {
  return comm::agree_on_error(comm, error, abort_code);
}

}  // namespace furnace::io::h5
