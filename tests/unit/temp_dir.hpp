// A fresh directory under /tmp for one test, removed with everything in it when the
// test ends.
#pragma once
#include <stdlib.h>

#include <filesystem>
#include <string>

namespace furnace::testing {

struct TempDir {
  std::string path;
  explicit TempDir(const std::string& prefix = "furnace_test") {
    std::string tmpl = "/tmp/" + prefix + "_XXXXXX";
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

}  // namespace furnace::testing
