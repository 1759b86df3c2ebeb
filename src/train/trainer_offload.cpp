// memory.experts = nvme and memory.optimizer = nvme: the trainer's side of
// memory::StateOffload. With the experts offloaded, each MoE layer's experts (one
// offloaded group) are in memory around their own work only:
//
//   forward   layer l: parameters in (read queued while layer l-1 ran)
//   backward  layer l: parameters in (still there for the last layer), gradients
//             zeroed; after it, their reduction over dp waited for, their sum of
//             squares kept for the clipping norm, the gradients written out
//   update    group by group after the norm is known: parameters, gradients and
//             moments in, clipped, AdamW, parameters and moments written out
//
// With the moments offloaded, only the update touches the tier: each group's moments
// come in, the group is updated, its moments go out.
//
// Every kernel sees the same bits as with the experts in memory (the views keep their
// addresses: StateStore::offload), so the run is bitwise the same.
#include <cstdio>
#include <filesystem>

#include "comm/fault.hpp"
#include "comm/mpi_check.hpp"
#include "kernels/optim.hpp"
#include "train/trainer.hpp"

namespace furnace::train {

using memory::Family;

void Trainer::set_up_offload() {
  std::string dir = cfg_.memory.nvme_dir, origin = "memory.nvme_dir";
  if (dir.empty()) {
    dir = cfg_.output.dir + "/nvme";
    origin = "memory.nvme_dir (default: output.dir/nvme)";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);  // a failure is named by the store
  }
  try {
    offload_ = std::make_unique<memory::StateOffload>(
        ps_, memory::NvmeStoreOptions{.dir = dir, .origin = origin, .rank = groups_.rank()}, ledger_);
  } catch (const std::runtime_error& e) {  // the directory or its file system: the run's settings
    throw io::ConfigError(e.what());
  }
  if (groups_.rank() == 0) {
    if (offload_->has(Family::Param))
      std::printf("nvme tier: the experts of %d MoE layer(s) in %s/rank*/ (%s)\n", offload_->groups(), dir.c_str(),
                  offload_->store(Family::Param).file().mode().c_str());
    else
      std::printf("nvme tier: the AdamW moments in %d group(s) of tensors in %s/rank*/ (%s)\n", offload_->groups(),
                  dir.c_str(), offload_->store(Family::ExpAvg).file().mode().c_str());
    std::fflush(stdout);
  }
  offloaded_sq_.assign(ps_.infos().size(), 0.0);
  offload_->initialize(cfg_.train.seed);
  // Testers: the first write of training fails (the gradients, or the moments).
  if (comm::fault::hit("nvme.write"))
    offload_->inject_write_fault(offload_->has(Family::Grad) ? Family::Grad : Family::ExpAvg);
  ckpt_write_access_ = {
      .group_of = [this](int i) { return offload_->group_of(i); },
      .bring = [this](int g) { offload_->bring(g, offload_->checkpointed()); },
      .done = {},
  };
  ckpt_read_access_ = {
      .group_of = [this](int i) { return offload_->group_of(i); },
      .bring =
          [this](int g) {
            for (Family f : offload_->checkpointed()) offload_->bring_zeroed(g, f);
          },
      .done = [this](int g) { offload_->write(g, offload_->checkpointed()); },
  };
  if (!offload_->has(Family::Param)) return;  // Moments: only the update touches the tier

  const auto& blocks = model_->blocks();
  layer_group_.assign(blocks.size(), -1);
  for (std::size_t l = 0; l < blocks.size(); ++l)
    for (int i = blocks[l]->first_param(); i <= blocks[l]->last_param(); ++i)
      if (offload_->group_of(i) >= 0) layer_group_[l] = offload_->group_of(i);
  const int groups = offload_->groups();
  model_->set_layer_hooks({
      .before_forward =
          [this, groups](int l) {
            const int g = layer_group_[std::size_t(l)];
            if (g < 0) return;
            offload_->bring(g, {Family::Param});
            if (g + 1 < groups) offload_->prefetch(g + 1, {Family::Param});
          },
      .before_backward =
          [this](int l) {
            const int g = layer_group_[std::size_t(l)];
            if (g < 0) return;
            offload_->bring(g, {Family::Param});
            offload_->bring_zeroed(g, Family::Grad);
            if (g > 0) offload_->prefetch(g - 1, {Family::Param});
          },
      .after_backward =
          [this](int l) {
            const int g = layer_group_[std::size_t(l)];
            if (g < 0) return;
            const auto& grp = ps_.offload_groups()[std::size_t(g)];
            for (int i = grp.first; i <= grp.last; ++i) {
              grad_sync_->wait_for(i);  // reduced over dp before the bytes leave
              offloaded_sq_[std::size_t(i)] = kernels::sum_squares<float>(ps_.owned(Family::Grad, i));
            }
            offload_->write(g, {Family::Grad});
          },
  });

}

void Trainer::update_offloaded(double clip_factor) {
  const int groups = offload_->groups();
  const auto& families = offload_->families();
  for (int g = 0; g < groups; ++g) {
    offload_->bring(g, families);
    if (g + 1 < groups) offload_->prefetch(g + 1, families);
    const auto& grp = ps_.offload_groups()[std::size_t(g)];
    for (int i = grp.first; i <= grp.last; ++i) {
      // Gradients in memory were clipped with the others (AdamW::clip).
      if (clip_factor != 1.0 && ps_.offloaded(i, Family::Grad)) AdamW::scale_tensor(ps_, i, clip_factor);
      opt_.update_tensor(ps_, i);
    }
    offload_->write(g, offload_->checkpointed());
  }
  // The next forward's first layer (Experts), or the next update's first group.
  if (groups > 0) offload_->prefetch(0, {offload_->has(Family::Param) ? Family::Param : Family::ExpAvg});
}

}  // namespace furnace::train
