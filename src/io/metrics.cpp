#include "io/metrics.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace furnace::io {

namespace {

[[noreturn]] void cannot(const char* what, const std::string& path) {
  throw std::runtime_error(std::string("cannot ") + what + " metrics file '" + path + "': " +
                           std::strerror(errno) + "; check output.dir");
}

// Rewrites `path` (atomically: .tmp, then rename) with the last line of each step
// 1 .. last, in step order.
void keep_steps_through(const std::string& path, long last) {
  std::ifstream in(path);
  if (!in) return;  // nothing written yet (e.g. resumed from another run's checkpoint)
  std::map<long, std::string> kept;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
    const long step = j["step"].get<long>();
    if (step >= 1 && step <= last) kept[step] = line;
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& [step, line] : kept) out << line << '\n';
    if (!out.flush()) cannot("rewrite", tmp);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace

MetricsWriter::MetricsWriter(const std::string& path, long resumed_step) {
  if (path.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  if (resumed_step > 0) keep_steps_through(path, resumed_step);
  f_ = std::fopen(path.c_str(), resumed_step > 0 ? "a" : "w");
  if (!f_) cannot("open", path);
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
