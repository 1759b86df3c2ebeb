#include "train/resume.hpp"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>

#include "comm/agree.hpp"
#include "comm/mpi_check.hpp"
#include "io/hdf5_util.hpp"

namespace furnace::train {
namespace fs = std::filesystem;

namespace {

// The file `latest` names, or nullopt with the reason in *why.
std::optional<std::string> latest_target(const fs::path& dir, std::string* why) {
  const fs::path latest = dir / "latest";
  std::error_code ec;
  if (!fs::exists(latest, ec)) {
    *why = "has no 'latest'";
    return std::nullopt;
  }
  std::ifstream in(latest);
  std::string name;
  std::getline(in, name);
  while (!name.empty() && (name.back() == '\r' || name.back() == ' ')) name.pop_back();
  if (name.empty()) {
    *why = "has an empty or unreadable 'latest'";
    return std::nullopt;
  }
  if (!fs::is_regular_file(dir / name, ec)) {
    *why = "has a 'latest' naming " + name + ", which does not exist";
    return std::nullopt;
  }
  return (dir / name).string();
}

}  // namespace

std::vector<std::string> resume_candidates(const std::string& dir, std::vector<std::string>* notes) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  auto note = [&](const std::string& s) {
    if (notes) notes->push_back(s);
  };
  std::string why;
  if (auto t = latest_target(dir, &why)) out.push_back(*t);
  std::vector<std::pair<long, std::string>> steps;
  static const std::regex kStepFile(R"(step_(\d+)\.h5)"), kTmpFile(R"(step_\d+\.h5\.tmp)");
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    std::smatch m;
    if (std::regex_match(name, m, kStepFile) && e.is_regular_file(ec)) steps.emplace_back(std::stol(m[1]), e.path().string());
    else if (std::regex_match(name, kTmpFile)) note("ignoring " + e.path().string() + ": an incomplete write");
  }
  if (ec) throw io::CheckpointError("checkpoint directory '" + dir + "' cannot be listed: " + ec.message());
  if (!why.empty() && (!steps.empty() || fs::exists(fs::path(dir) / "latest", ec))) note("checkpoint directory " + dir + " " + why + "; trying its step_*.h5 files");
  std::sort(steps.begin(), steps.end(), std::greater<>());
  for (const auto& [step, path] : steps)
    if (std::find(out.begin(), out.end(), path) == out.end()) out.push_back(path);
  return out;
}

Resumed resume_auto(const std::string& dir, memory::StateStore& ps, const comm::Groups& g,
                    const io::OffloadAccess* offload) {
  const bool root = g.rank() == 0;
  // Every rank must try the same files in the same order (each read is collective):
  // rank 0 lists the directory for all.
  std::vector<std::string> notes, candidates;
  std::optional<std::string> error;
  std::string listing;
  if (root) {
    try {
      for (const auto& c : resume_candidates(dir, &notes)) listing += c + "\n";
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (auto agreed = io::h5::agree_on_error(g.world(), error)) throw io::CheckpointError(*agreed);
  listing = comm::broadcast_string(listing, 0, g.world());
  for (std::size_t at = 0, nl; (nl = listing.find('\n', at)) != std::string::npos; at = nl + 1)
    candidates.push_back(listing.substr(at, nl - at));
  if (root)
    for (const auto& n : notes) std::printf("resume auto: %s\n", n.c_str());
  Resumed r;
  for (const auto& path : candidates) {
    try {
      r.meta = io::read_checkpoint(path, ps, g, &r.optimizer_step, offload);
      r.path = path;
      return r;
    } catch (const io::CheckpointError& e) {
      if (root) std::printf("resume auto: skipping a checkpoint that does not load: %s\n", e.what());
    }
  }
  if (!candidates.empty())
    throw io::CheckpointError("resume auto: none of the " + std::to_string(candidates.size()) +
                              " checkpoint(s) in " + dir + " loads (reasons above); name one with --resume PATH, "
                              "or move them away (or set checkpoint.dir) to start afresh");
  if (root) std::printf("resume auto: no checkpoint in %s; starting at step 0\n", dir.c_str());
  std::fflush(stdout);
  return r;
}

std::vector<std::string> config_differences(const std::string& checkpoint_json, const std::string& now_json) {
  using json = nlohmann::ordered_json;
  json before, now;
  try {
    before = json::parse(checkpoint_json);
    now = json::parse(now_json);
  } catch (const json::exception& e) {
    return {std::string("the checkpoint's config cannot be compared with this run's: ") + e.what()};
  }
  // section.key -> value, in document order.
  auto flatten = [](const json& j) {
    std::vector<std::pair<std::string, json>> out;
    if (j.is_object())
      for (const auto& [sec, keys] : j.items())
        if (keys.is_object())
          for (const auto& [key, v] : keys.items()) out.emplace_back(sec + "." + key, v);
    return out;
  };
  const auto b = flatten(before), n = flatten(now);
  auto find = [](const auto& list, const std::string& name) -> const json* {
    for (const auto& [k, v] : list)
      if (k == name) return &v;
    return nullptr;
  };
  std::vector<std::string> out;
  for (const auto& [name, v] : n) {
    const json* old = find(b, name);
    if (!old) out.push_back(name + ": not in checkpoint, " + v.dump() + " now");
    else if (*old != v) out.push_back(name + ": " + old->dump() + " in checkpoint, " + v.dump() + " now");
  }
  for (const auto& [name, v] : b)
    if (!find(n, name)) out.push_back(name + ": " + v.dump() + " in checkpoint, no such setting now");
  return out;
}

}  // namespace furnace::train
