// Metrics as JSON Lines: one object per line, flushed at once, so a job killed by
// the scheduler still leaves every completed step on disk.
#pragma once
#include <cstdio>
#include <string>

namespace furnace::io {

class MetricsWriter {
 public:
  // Opens `path` for appending (append: a resumed run continues the same file);
  // an empty path writes nothing.
  explicit MetricsWriter(const std::string& path, bool truncate = true);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // `json_object` is one serialised JSON object.
  void write(const std::string& json_object);

 private:
  std::FILE* f_ = nullptr;
};

}  // namespace furnace::io
