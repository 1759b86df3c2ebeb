// Config parsing: defaults, every error class (each message is one line naming the
// key), overrides, and docs/configuration.md staying in sync with the key table.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/config.hpp"

using namespace furnace::io;

namespace {

// Parses `text` expecting a ConfigError whose single-line message contains every
// string of `needles`.
void expect_error(const std::string& text, const std::vector<std::string>& overrides,
                  const std::vector<std::string>& needles) {
  try {
    parse_config(text, overrides, "test.toml");
    ADD_FAILURE() << "no ConfigError for:\n" << text;
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}
void expect_error(const std::string& text, const std::vector<std::string>& needles) {
  expect_error(text, {}, needles);
}

}  // namespace

TEST(Config, DefaultsAreValid) {
  EXPECT_NO_THROW(validate(Config{}));
  EXPECT_EQ(to_json(parse_config("")), to_json(Config{}));
}

TEST(Config, TinyConfigLoads) {
  Config c = load_config("configs/tiny.toml");
  EXPECT_EQ(c.model.seq_len, 16);
  EXPECT_EQ(c.model.d_model, 32);
  EXPECT_EQ(c.moe.experts, 4);
  EXPECT_EQ(c.train.steps, 20);
  EXPECT_EQ(c.output.dir, "runs/tiny");
}

TEST(Config, ParsesValues) {
  Config c = parse_config("[model]\nd_model = 64\nnorm = \"rmsnorm\"\n[train]\nlr = 3e-4\nseed = 7\n"
                          "[data]\ntrain = \"x.h5\"\n");
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_EQ(c.model.norm, "rmsnorm");
  EXPECT_DOUBLE_EQ(c.train.lr, 3e-4);
  EXPECT_EQ(c.train.seed, 7u);
  EXPECT_EQ(c.data.train, "x.h5");
  EXPECT_EQ(c.model.n_heads, Config{}.model.n_heads);  // absent keys keep defaults
}

TEST(Config, IntegerAcceptedForFloat) {
  EXPECT_DOUBLE_EQ(parse_config("[train]\nlr = 1\n").train.lr, 1.0);
  EXPECT_DOUBLE_EQ(parse_config("", {"moe.capacity_factor=3"}).moe.capacity_factor, 3.0);
}

TEST(ConfigErrors, MissingFile) {
  try {
    load_config("/nonexistent/furnace.toml");
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/furnace.toml"), std::string::npos) << e.what();
  }
}

TEST(ConfigErrors, SyntaxErrorHasLineAndColumn) {
  expect_error("[model]\nd_model = 64\nn_heads = = 2\n", {"test.toml:3:", "TOML syntax error"});
}

TEST(ConfigErrors, UnknownSectionSuggestsClosest) {
  expect_error("[modle]\nd_model = 64\n", {"[modle]", "did you mean [model]"});
  expect_error("[optimizer]\nlr = 1\n", {"[optimizer]", "sections: model"});
  expect_error("d_model = 64\n", {"d_model", "[model]"});  // a key outside any section
  expect_error("model = 3\n", {"[model]", "table"});
}

TEST(ConfigErrors, UnknownKeySuggestsClosest) {
  expect_error("[model]\nd_modle = 64\n", {"test.toml:2:", "model.d_modle", "did you mean model.d_model"});
  expect_error("[model]\nexperts = 4\n", {"model.experts", "did you mean moe.experts"});
  expect_error("[train]\nfoo = 1\n", {"train.foo"});
}

TEST(ConfigErrors, WrongType) {
  expect_error("[model]\nnorm = 3\n", {"model.norm = 3", "wrong type (integer)", "layernorm, rmsnorm"});
  expect_error("[model]\nd_model = 2.5\n", {"model.d_model = 2.5", "wrong type (float)", "integer >= 1"});
  expect_error("[train]\nlr = \"fast\"\n", {"train.lr = \"fast\"", "wrong type (string)"});
  // Every non-boolean key of the table rejects a boolean, naming itself; boolean keys
  // reject a string.
  for (const auto& k : config_keys()) {
    if (k.type == KeyType::Bool)
      expect_error("[" + k.section + "]\n" + k.name + " = \"yes\"\n",
                   {k.full_name() + " = \"yes\"", "wrong type"});
    else
      expect_error("[" + k.section + "]\n" + k.name + " = true\n", {k.full_name() + " = true", "wrong type"});
  }
}

TEST(ConfigErrors, OutOfRange) {
  struct Case {
    std::string section, key, value, accepted;
  };
  const Case cases[] = {
      {"model", "d_model", "0", "integer >= 1"},         {"model", "n_heads", "0", ">= 1"},
      {"model", "seq_len", "-3", ">= 1"},                {"model", "vocab_size", "1", "[2, 65536]"},
      {"model", "vocab_size", "70000", "[2, 65536]"},    {"model", "norm", "\"batchnorm\"", "rmsnorm"},
      {"model", "activation", "\"relu\"", "swiglu"},     {"moe", "experts", "-1", ">= 0"},
      {"moe", "every", "0", ">= 1"},                     {"train", "lr", "0.0", "> 0"},
      {"train", "beta1", "1.0", "[0, 1)"},               {"train", "beta2", "-0.5", "[0, 1)"},
      {"train", "batch_size", "0", ">= 1"},              {"train", "steps", "0", ">= 1"},
      {"train", "lr", "inf", "> 0"},                     {"parallel", "ep", "0", ">= 1"},
      {"comm", "alltoall", "\"ring\"", "hierarchical"},  {"data", "train", "\"\"", "non-empty"},
      {"model", "d_model", "3000000000", "at most 2147483647"},
      // Counts with a sane upper bound (issue 7: eval_batches = 2e9 never ended).
      {"train", "eval_batches", "2000000000", "[1, 10000]"},  {"comm", "bucket_mb", "100000", "[1, 1024]"},
      {"checkpoint", "keep", "5000", "[1, 1000]"},  {"checkpoint", "alignment", "2147483647", "[1, 1073741824]"},
  };
  for (const auto& c : cases)
    expect_error("[" + c.section + "]\n" + c.key + " = " + c.value + "\n",
                 {"test.toml:2:", c.section + "." + c.key + " = " + c.value, c.accepted});
}

TEST(ConfigErrors, Inconsistent) {
  expect_error("[model]\nd_model = 100\nn_heads = 3\n", {"model.d_model = 100", "model.n_heads = 3"});
  expect_error("[moe]\nexperts = 4\ntop_k = 5\n", {"moe.top_k = 5", "moe.experts = 4"});
  expect_error("[moe]\nexperts = 6\n[parallel]\nep = 4\n", {"moe.experts = 6", "parallel.ep = 4"});
  // A dropless budget with a capacity factor would bound nothing (the capacity does).
  expect_error("[memory]\nmoe_buffer_mb = 8\n", {"memory.moe_buffer_mb = 8", "moe.capacity_factor = 2"});
  EXPECT_NO_THROW(parse_config("[moe]\ncapacity_factor = 0\n[memory]\nmoe_buffer_mb = 8\n"));
  EXPECT_NO_THROW(parse_config("[memory]\nmoe_buffer_mb = 64\n"));  // the default: no budget asked for
  // Not over-restricted: a dense model ignores top_k; warmup may outlast training.
  EXPECT_NO_THROW(parse_config("[moe]\nexperts = 0\ntop_k = 5\n"));
  EXPECT_NO_THROW(parse_config("[train]\nsteps = 10\nwarmup_steps = 100\n"));
  Config c;
  c.model.n_heads = 0;
  try {
    validate(c);
    ADD_FAILURE() << "validate accepted n_heads = 0";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.n_heads = 0"), std::string::npos) << e.what();
  }
}

TEST(ConfigOverrides, Apply) {
  Config c = parse_config("[model]\nd_model = 64\n",
                          {"model.d_model=128", "model.norm=rmsnorm", "model.activation=\"swiglu\"",
                           "train.lr = 3e-4", "data.train=foo/bar.h5", "train.seed=99"});
  EXPECT_EQ(c.model.d_model, 128);  // the override wins over the file
  EXPECT_EQ(c.model.norm, "rmsnorm");
  EXPECT_EQ(c.model.activation, "swiglu");
  EXPECT_DOUBLE_EQ(c.train.lr, 3e-4);
  EXPECT_EQ(c.data.train, "foo/bar.h5");
  EXPECT_EQ(c.train.seed, 99u);
}

TEST(ConfigOverrides, Errors) {
  expect_error("", {"model.d_modle=3"}, {"--set model.d_modle=3", "model.d_modle", "did you mean model.d_model"});
  expect_error("", {"train.lr=abc"}, {"train.lr = \"abc\"", "wrong type"});
  expect_error("", {"model.d_model=0"}, {"--set", "model.d_model = 0", "out of range"});
  expect_error("", {"model.d_model"}, {"model.d_model", "malformed"});
  expect_error("", {"d_model=3"}, {"d_model=3", "malformed"});
  expect_error("", {"modle.d_model=3"}, {"[modle]", "did you mean [model]"});
}

TEST(Config, ToJsonHasEveryKey) {
  Config c = parse_config("", {"model.d_model=96", "model.n_heads=3"});
  auto j = nlohmann::json::parse(to_json(c));
  EXPECT_EQ(j["model"]["d_model"], 96);
  EXPECT_EQ(j["model"]["norm"], "layernorm");
  for (const auto& k : config_keys()) EXPECT_TRUE(j[k.section].contains(k.name)) << k.full_name();
}

TEST(Config, KeyTableIsComplete) {
  for (const auto& k : config_keys()) {
    EXPECT_FALSE(k.doc.empty()) << k.full_name();
    EXPECT_FALSE(k.accepted().empty()) << k.full_name();
  }
}

TEST(Config, DocIsInSync) {
  const std::string path = "docs/configuration.md";  // tests run from the repo root
  std::ifstream in(path);
  ASSERT_TRUE(in) << path << " not found; run the tests from the repository root";
  std::stringstream doc;
  doc << in.rdbuf();
  std::string expected = config_reference_markdown();
  if (doc.str() != expected) {
    std::filesystem::create_directories("build");
    std::ofstream("build/configuration.md.expected") << expected;
    FAIL() << path << " is out of date with the key table in src/io/config.cpp; update it with\n"
           << "  cp build/configuration.md.expected " << path;
  }
}

// Issue 7, bounded input: a config is read up to kMaxConfigBytes and no further, so a
// device or FIFO that never ends (/dev/zero) is refused at once instead of filling memory.
TEST(ConfigErrors, ReadIsBounded) {
  // A regular file just over the limit is refused; one just under it is parsed.
  const std::string path = "build/test_config_big.toml";
  std::filesystem::create_directories("build");
  std::ofstream(path) << "[model]\nd_model = 64\n" << std::string(kMaxConfigBytes, '#') << "\n";
  ASSERT_THROW(load_config(path), ConfigError);  // before trying the endless inputs below
  std::ofstream(path) << "[model]\nd_model = 64\n#" << std::string(kMaxConfigBytes - 64, '#') << "\n";
  EXPECT_EQ(load_config(path).model.d_model, 64);
  std::filesystem::remove(path);
  for (const char* endless : {"/dev/zero", "/dev/urandom"}) {
    try {
      load_config(endless);
      ADD_FAILURE() << "no ConfigError for " << endless;
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(endless), std::string::npos) << msg;
      EXPECT_NE(msg.find("larger than 1 MiB"), std::string::npos) << msg;
    }
  }
}

// Issue 7, quoted input: a value of any length is quoted in at most kClipBytes of it, once.
TEST(ConfigErrors, LongValuesAreQuotedBounded) {
  const std::string huge(100000, 'a');
  const std::vector<std::vector<std::string>> cases = {
      {"model.norm=" + huge},  // a bad choice: the value was echoed twice
      {"model." + huge + "=1"},  // an unknown key
      {huge + ".x=1"},  // an unknown section
      {"model.norm=" + huge + "\nrmsnorm"},  // a newline inside the value
  };
  for (const auto& overrides : cases) {
    try {
      parse_config("", overrides, "test.toml");
      ADD_FAILURE() << "no ConfigError";
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_LT(msg.size(), 3 * 160 + 400) << msg.substr(0, 300);
      EXPECT_EQ(msg.find('\n'), std::string::npos);
      EXPECT_NE(msg.find("(100"), std::string::npos) << "no length of the cut value: " << msg;
    }
  }
  try {
    load_config("/nonexistent/" + huge + ".toml");
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_LT(std::string(e.what()).size(), 400u) << std::string(e.what()).substr(0, 300);
  }
}
