// What a resume keeps and says: metrics.jsonl cut back to the resumed step (no step
// twice), the order in which `--resume auto` tries a directory's checkpoints, and
// the config differences it prints. (resume_auto's reads are exercised end to end by
// tests/e2e/checkpoint.sh.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "io/config.hpp"
#include "io/metrics.hpp"
#include "train/resume.hpp"

namespace fs = std::filesystem;

namespace {

class ScratchDir : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("furnace_resume_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& text) const { std::ofstream(path(name)) << text; }
  std::string read(const std::string& name) const {
    std::ifstream in(path(name));
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  fs::path dir_;
};

using MetricsResume = ScratchDir;

TEST_F(MetricsResume, KeepsStepsUpToTheResumedOneOnceAndAppends) {
  // Steps 1-5, then a repeat of 4-5 (an earlier resume), then a line cut short by a kill.
  write("m.jsonl",
        "{\"step\":1,\"loss\":1}\n{\"step\":2,\"loss\":2}\n{\"step\":3,\"loss\":3}\n"
        "{\"step\":4,\"loss\":4}\n{\"step\":5,\"loss\":5}\n{\"step\":4,\"loss\":40}\n"
        "{\"step\":5,\"loss\":50}\n{\"step\":6,\"lo");
  {
    furnace::io::MetricsWriter w(path("m.jsonl"), 4);
    w.write("{\"step\":5,\"loss\":500}");
  }
  EXPECT_EQ(read("m.jsonl"),
            "{\"step\":1,\"loss\":1}\n{\"step\":2,\"loss\":2}\n{\"step\":3,\"loss\":3}\n"
            "{\"step\":4,\"loss\":40}\n{\"step\":5,\"loss\":500}\n");
}

TEST_F(MetricsResume, StepZeroStartsEmptyAndAMissingFileIsCreated) {
  write("m.jsonl", "{\"step\":1}\n");
  { furnace::io::MetricsWriter w(path("m.jsonl"), 0); }
  EXPECT_EQ(read("m.jsonl"), "");
  {
    furnace::io::MetricsWriter w(path("new.jsonl"), 7);  // resumed from another run's checkpoint
    w.write("{\"step\":8}");
  }
  EXPECT_EQ(read("new.jsonl"), "{\"step\":8}\n");
}

using ResumeCandidates = ScratchDir;

TEST_F(ResumeCandidates, LatestFirstThenStepFilesNewestFirst) {
  for (const char* f : {"step_00000010.h5", "step_00000030.h5", "step_00000020.h5", "step_00000100.h5"})
    write(f, "x");
  write("step_00000200.h5.tmp", "x");
  write("notes.txt", "x");
  write("latest", "step_00000020.h5\n");
  std::vector<std::string> notes;
  EXPECT_EQ(furnace::train::resume_candidates(dir_.string(), &notes),
            (std::vector<std::string>{path("step_00000020.h5"), path("step_00000100.h5"),
                                      path("step_00000030.h5"), path("step_00000010.h5")}));
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("step_00000200.h5.tmp: an incomplete write"), std::string::npos) << notes[0];
}

TEST_F(ResumeCandidates, ALatestThatNamesNothingIsSaidAndSkipped) {
  write("step_00000005.h5", "x");
  write("latest", "step_00000009.h5\n");
  std::vector<std::string> notes;
  EXPECT_EQ(furnace::train::resume_candidates(dir_.string(), &notes),
            std::vector<std::string>{path("step_00000005.h5")});
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("'latest' naming step_00000009.h5, which does not exist"), std::string::npos) << notes[0];
  fs::remove(path("latest"));
  notes.clear();
  EXPECT_EQ(furnace::train::resume_candidates(dir_.string(), &notes).size(), 1u);
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("has no 'latest'; trying its step_*.h5 files"), std::string::npos) << notes[0];
}

TEST_F(ResumeCandidates, NoDirectoryOrAnEmptyOneHasNone) {
  EXPECT_TRUE(furnace::train::resume_candidates(path("missing"), nullptr).empty());
  std::vector<std::string> notes;
  EXPECT_TRUE(furnace::train::resume_candidates(dir_.string(), &notes).empty());
  EXPECT_TRUE(notes.empty());
}

TEST(ConfigDifferences, OneLinePerChangedSetting) {
  using furnace::io::parse_config;
  using furnace::io::to_json;
  const auto before = to_json(parse_config("[train]\nseed = 1\nlr = 0.001\n[data]\ntrain = \"a.h5\"\n"));
  const auto now = to_json(parse_config("[train]\nseed = 2\nlr = 0.001\nbatch_size = 32\n[data]\ntrain = \"b.h5\"\n"));
  EXPECT_EQ(furnace::train::config_differences(before, now),
            (std::vector<std::string>{"train.seed: 1 in checkpoint, 2 now",
                                      "train.batch_size: 16 in checkpoint, 32 now",
                                      "data.train: \"a.h5\" in checkpoint, \"b.h5\" now"}));
  EXPECT_TRUE(furnace::train::config_differences(now, now).empty());
}

TEST(ConfigDifferences, SettingsOnlyOneSideHasAndUnreadableJson) {
  const std::vector<std::string> d =
      furnace::train::config_differences(R"({"train": {"seed": 1, "gone": true}})", R"({"train": {"seed": 1, "new": "x"}})");
  EXPECT_EQ(d, (std::vector<std::string>{"train.new: not in checkpoint, \"x\" now",
                                          "train.gone: true in checkpoint, no such setting now"}));
  const auto bad = furnace::train::config_differences("{not json", "{}");
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_NE(bad[0].find("cannot be compared"), std::string::npos);
}

}  // namespace
