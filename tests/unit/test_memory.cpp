// The memory layer's bookkeeping: the Ledger's current/peak per category and tier,
// Arena's Measure mode recording exactly what Allocate mode then holds (so the plan
// and the real build agree byte for byte), reserve() leaving no chunk slack, and the
// StateStore's families as separate buffers, each recorded under its category.
#include <gtest/gtest.h>

#include <set>

#include "memory/arena.hpp"
#include "memory/ledger.hpp"
#include "memory/state_store.hpp"

namespace furnace::memory {
namespace {

TEST(Ledger, CurrentAndPeakPerCategoryAndTier) {
  Ledger l;
  l.add(Category::Activations, Tier::Device, "a", 100);
  l.add(Category::Activations, Tier::Device, "b", 50);
  l.add(Category::Optimizer, Tier::Host, "m", 70);
  l.release(Category::Activations, Tier::Device, "a", 100);
  EXPECT_EQ(l.current(Category::Activations, Tier::Device), 50u);
  EXPECT_EQ(l.peak(Category::Activations, Tier::Device), 150u);
  EXPECT_EQ(l.peak(Tier::Device), 150u);
  EXPECT_EQ(l.current(Tier::Host), 70u);
  EXPECT_EQ(l.label_current("a"), 0u);
  EXPECT_EQ(l.label_peak("a"), 100u);
  EXPECT_THROW(l.release(Category::Optimizer, Tier::Host, "m", 71), std::logic_error);
  const std::string r = l.report("test");
  for (const char* s : {"parameters", "activations", "optimizer", "workspace", "device", "host", "total"})
    EXPECT_NE(r.find(s), std::string::npos) << s << " not in\n" << r;
  EXPECT_EQ(l.peak_json().find("\"activations\": 150"), l.peak_json().find("\"activations\""));
}

// The same requests in Measure and in Allocate (after reserve) mode record the same
// bytes, and the reserved arena holds exactly what was asked for.
TEST(Arena, MeasureRecordsWhatAllocateThenHolds) {
  auto requests = [](Arena& a) {
    a.view2<float>(100, 33);
    a.view1<int>(7);
    a.view4<float>(2, 3, 5, 7);
  };
  Ledger measured;
  {
    Arena m("test::arena", Category::Workspace, measured, Mode::Measure);
    requests(m);
    EXPECT_EQ(m.bytes_reserved(), m.bytes_used());
  }
  Ledger real;
  Arena a("test::arena", Category::Workspace, real);
  a.reserve(measured.label_peak("test::arena"));
  requests(a);
  EXPECT_EQ(a.bytes_reserved(), a.bytes_used());
  EXPECT_EQ(real.current(Category::Workspace, Tier::Device), measured.peak(Category::Workspace, Tier::Device));
  // A request beyond the reservation still works (a new chunk), and is recorded.
  auto more = a.view1<float>(1000);
  more(999) = 1.0f;
  EXPECT_GT(real.current(Category::Workspace, Tier::Device), measured.peak(Category::Workspace, Tier::Device));
}

// Large tensors start on a page in every family (checkpoint loads read them with
// O_DIRECT straight into the store); small ones only 64-byte aligned.
TEST(StateStore, LargeTensorsArePageAligned) {
  Ledger l;
  StateStore ps;
  ps.add({.name = "norm", .shape = {5}});
  ps.add({.name = "w", .shape = {512, 512}});
  ps.add({.name = "b", .shape = {7}});
  ps.add({.name = "experts", .shape = {4, 256, 300}});
  ps.allocate(l);
  for (Family f : kStateFamilies)
    for (int i = 0; i < 4; ++i) {
      const auto address = reinterpret_cast<std::uintptr_t>(ps.slice(ps.family(f), i).data());
      EXPECT_EQ(address % (ps.info(i).size >= (64 << 10) ? 4096 : 64), 0u) << ps.info(i).name;
    }
}

TEST(StateStore, FamiliesAreSeparateBuffersInTheirCategories) {
  Ledger l;
  {
    StateStore ps;
    ps.add({.name = "w", .shape = {3, 5}});
    ps.add({.name = "b", .shape = {5}});
    ps.allocate(l);
    std::set<const float*> bases;
    for (Family f : kStateFamilies) {
      EXPECT_EQ(ps.family(f).extent(0), std::size_t(ps.total()));
      bases.insert(ps.family(f).data());
    }
    EXPECT_EQ(bases.size(), kStateFamilies.size());
    const std::uint64_t fam = ps.family_bytes(Family::Param);
    EXPECT_GE(fam, std::uint64_t(ps.total()) * 4);
    EXPECT_EQ(l.current(Category::Parameters, Tier::Device), fam);
    EXPECT_EQ(l.current(Category::Gradients, Tier::Device), fam);
    EXPECT_EQ(l.current(Category::Optimizer, Tier::Device), 2 * fam);
    EXPECT_EQ(ps.slice(ps.grads(), 1).data(), ps.grads().data() + ps.info(1).offset);
    EXPECT_STREQ(family_name(Family::ExpAvgSq), "exp_avg_sq");
  }
  EXPECT_EQ(l.current(Tier::Device), 0u);  // released with the store
}

// memory.optimizer = host: the moments are allocated (zeroed, their own buffers) and
// recorded on the host tier, the parameters and gradients stay on the device tier; the
// nvme tier is refused until the store streams it.
TEST(StateStore, TheOptimizerFamiliesOnTheHostTier) {
  Ledger l;
  {
    StateStore ps;
    ps.add({.name = "w", .shape = {3, 5}});
    Placement p;
    p.optimizer = Tier::Host;
    ps.allocate(l, p);
    const std::uint64_t fam = std::uint64_t(ps.total()) * 4;
    EXPECT_EQ(l.current(Category::Optimizer, Tier::Host), 2 * fam);
    EXPECT_EQ(l.current(Category::Optimizer, Tier::Device), 0u);
    EXPECT_EQ(l.current(Category::Parameters, Tier::Device), fam);
    EXPECT_EQ(ps.tier(Family::ExpAvg), Tier::Host);
    EXPECT_NE(ps.exp_avg().data(), ps.exp_avg_sq().data());
    EXPECT_NE(ps.exp_avg().data(), nullptr);
    for (std::int64_t i = 0; i < ps.total(); ++i) EXPECT_EQ(ps.exp_avg_sq()(i), 0.f);
  }
  EXPECT_EQ(l.current(Tier::Host), 0u);
  StateStore nv;
  nv.add({.name = "w", .shape = {3}});
  Placement p;
  p.optimizer = Tier::Nvme;
  EXPECT_THROW(nv.allocate(l, p), std::logic_error);
}

}  // namespace
}  // namespace furnace::memory
