#include "io/metrics.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace furnace::io {

MetricsWriter::MetricsWriter(const std::string& path, bool truncate) {
  if (path.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  f_ = std::fopen(path.c_str(), truncate ? "w" : "a");
  if (!f_)
    throw std::runtime_error("cannot open metrics file '" + path + "': " + std::strerror(errno) +
                             "; check output.dir");
}

MetricsWriter::~MetricsWriter() {
  if (f_) std::fclose(f_);
}

void MetricsWriter::write(const std::string& json_object) {
  if (!f_) return;
  std::fputs(json_object.c_str(), f_);
  std::fputc('\n', f_);
  std::fflush(f_);
}

}  // namespace furnace::io
