// Metrics as JSON Lines: one object per line, flushed at once, so a job killed by
// the scheduler still leaves every completed step on disk.
#pragma once
#include <cstdio>
#include <string>

namespace furnace::io {

class MetricsWriter {
 public:
  // Opens `path` to continue after `resumed_step` steps: the lines of steps
  // 1 .. resumed_step already there are kept (the last line of a step written twice),
  // every other line is dropped (steps after a checkpoint that a resume repeats, a
  // line cut short by a kill), so no step is ever in the file twice. 0: start empty.
  // An empty path writes nothing.
  explicit MetricsWriter(const std::string& path, long resumed_step = 0);
  ~MetricsWriter();
  MetricsWriter(const MetricsWriter&) = delete;
  MetricsWriter& operator=(const MetricsWriter&) = delete;

  // `json_object` is one serialised JSON object.
  void write(const std::string& json_object);

 private:
  std::FILE* f_ = nullptr;
};

}  // namespace furnace::io
