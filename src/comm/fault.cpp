#include "comm/fault.hpp"

#include <mpi.h>

#include <cstdlib>
#include <stdexcept>
#include <vector>

namespace furnace::comm::fault {

namespace {

struct Entry {
  std::string site;
  int rank = -1;  // -1: every rank
};

const std::vector<Entry>& entries() {
  static const std::vector<Entry> list = [] {
    std::vector<Entry> out;
    const char* env = std::getenv("FURNACE_FAULT");
    if (!env) return out;
    std::string s(env);
    for (std::size_t pos = 0; pos <= s.size();) {
      std::size_t end = s.find(',', pos);
      if (end == std::string::npos) end = s.size();
      std::string item = s.substr(pos, end - pos);
      pos = end + 1;
      if (item.empty()) continue;
      Entry e;
      const std::size_t at = item.find('@');
      e.site = item.substr(0, at);
      if (at != std::string::npos) e.rank = std::atoi(item.c_str() + at + 1);
      out.push_back(e);
    }
    return out;
  }();
  return list;
}

}  // namespace

bool hit(const char* site) {
  const auto& list = entries();
  if (list.empty()) return false;
  int rank = -1, up = 0;
  MPI_Initialized(&up);
  if (up) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  for (const auto& e : list)
    if (e.site == site && (e.rank < 0 || e.rank == rank)) return true;
  return false;
}

void maybe_throw(const char* site) {
  if (hit(site)) throw std::runtime_error(std::string("injected fault at ") + site + " (FURNACE_FAULT)");
}

}  // namespace furnace::comm::fault
