// `furnace bench calibrate`: measures this machine and writes a machine description
// for `furnace plan` (docs/plan.md).
#pragma once
#include <string>

namespace furnace::app {

struct BenchCalibrateOptions {
  std::string out;                   // the machine file written
  std::string name = "this machine (calibrated)";
  std::string dir = ".";             // where the disk rates are measured (a file of disk_mb)
  int disk_mb = 512;
  double seconds = 0.2;              // per GEMM size
};
int bench_calibrate(const BenchCalibrateOptions& opt);

}  // namespace furnace::app
