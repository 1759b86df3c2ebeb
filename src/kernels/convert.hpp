// Rows between fp32 and a 16-bit format (train.precision = bf16 | fp16): the MoE
// dispatch sends 16-bit rows, half the bytes, and the experts' outputs are rounded to
// the 16-bit values they would have after such a trip in every layout.
#pragma once
#include <cstdint>

#include "kernels/precision.hpp"
#include "kernels/views.hpp"

namespace furnace::kernels {

// out(r, :) = in(order(r), :) in 16 bits; an empty `order` keeps the row order.
// out has the rows to write; in is read at the rows `order` names.
void rows_to_16bit(Precision p, View2<const float> in, View1<const index_t> order, View2<std::uint16_t> out);
// out(r, :) = the float value of in(order(r), :); an empty `order` keeps the row order.
void rows_from_16bit(Precision p, View2<const std::uint16_t> in, View1<const index_t> order, View2<float> out);
// v = round_to(p, v), elementwise (identity for FP32).
void round_values(Precision p, View1<float> v);

}  // namespace furnace::kernels
