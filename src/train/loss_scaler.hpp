// Dynamic loss scaling for fp16 (train.precision = fp16): the loss gradient is
// multiplied by `scale` so that small gradients survive fp16's narrow range in the
// 16-bit GEMM operands; the fp32 gradients are divided by it before clipping and the
// update. A step whose scaled gradients overflow (a non-finite global norm) is skipped
// and halves the scale; `window` finite steps in a row double it (capped at 2^24).
// Powers of two keep the scaling and unscaling exact. bf16 and fp32 have fp32's range:
// the scale stays 1.
#pragma once

namespace furnace::train {

class LossScaler {
 public:
  static constexpr double kMaxScale = 16777216.0;  // 2^24

  LossScaler() = default;
  LossScaler(bool enabled, double initial, int window)
      : enabled_(enabled), scale_(enabled ? initial : 1.0), window_(window < 1 ? 1 : window) {}

  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  long good_steps() const { return good_; }  // finite steps since the last change
  long overflows() const { return overflows_; }  // steps skipped for overflow, this run

  // A non-finite gradient at this scale is an overflow to skip (the scale can still go
  // down) rather than a broken step: false when disabled or at a scale of 1.
  bool can_back_off() const { return enabled_ && scale_ > 1.0; }

  // After a step whose update was applied.
  void finite_step() {
    if (!enabled_) return;
    if (++good_ >= window_) {
      good_ = 0;
      if (scale_ * 2 <= kMaxScale) scale_ *= 2;
    }
  }
  // After a step skipped because its scaled gradients overflowed (can_back_off()).
  void overflow() {
    ++overflows_;
    good_ = 0;
    scale_ = scale_ / 2 < 1.0 ? 1.0 : scale_ / 2;
  }
  // Resume: the state a checkpoint kept.
  void restore(double scale, long good_steps) {
    if (!enabled_) return;
    scale_ = scale;
    good_ = good_steps;
  }

 private:
  bool enabled_ = false;
  double scale_ = 1.0;
  int window_ = 1;
  long good_ = 0, overflows_ = 0;
};

}  // namespace furnace::train
