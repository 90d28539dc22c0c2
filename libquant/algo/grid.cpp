// The plain integer grid (GPTQ's quant.py min-max grid) and round-to-nearest onto it.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "quant/error.h"
#include "quant/quant_weight.h"

namespace quant {

std::string GridSpec::str() const {
  return fmt::format("int{} {} {}{}", bits, group == 0 ? std::string("per-channel") : fmt::format("g{}", group),
                     sym ? "sym" : "asym", mse ? " mse" : "");
}

void QuantWeight::dequantize(float* out) const {
  const int64_t ng = n_groups();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const size_t g = static_cast<size_t>(r * ng + group_of(c));
      const uint8_t code = codes[static_cast<size_t>(r * cols + c)];
      out[r * cols + c] = scales[g] * (levels.empty() ? static_cast<float>(code) : levels[code]) + mins[g];
    }
}

QuantWeight sort_columns_by_group(const QuantWeight& q, std::vector<int64_t>& perm, std::string_view name) {
  perm.resize(static_cast<size_t>(q.cols));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return q.group_of(a) < q.group_of(b); });
  QuantWeight out = q;
  out.g_idx.clear();
  for (int64_t j = 0; j < q.cols; ++j) {
    const int64_t c = perm[static_cast<size_t>(j)];
    QUANT_CHECK(q.group_of(c) == j / q.group, "{}: g_idx does not put {} columns in each group, so sorting cannot make the "
                "groups contiguous (column {} of group {})", name, q.group, c, q.group_of(c));
    for (int64_t r = 0; r < q.rows; ++r) out.codes[static_cast<size_t>(r * q.cols + j)] = q.codes[static_cast<size_t>(r * q.cols + c)];
  }
  return out;
}

QuantWeight unsort_columns(const QuantWeight& q, const std::vector<int64_t>& perm) {
  QuantWeight out = q;
  out.g_idx.assign(static_cast<size_t>(q.cols), 0);
  for (int64_t j = 0; j < q.cols; ++j) {
    const int64_t c = perm[static_cast<size_t>(j)];
    out.g_idx[static_cast<size_t>(c)] = static_cast<int32_t>(j / q.group);
    for (int64_t r = 0; r < q.rows; ++r) out.codes[static_cast<size_t>(r * q.cols + c)] = q.codes[static_cast<size_t>(r * q.cols + j)];
  }
  return out;
}

double GridSpec::logical_bpw(int64_t cols) const {
  const double g = static_cast<double>(group == 0 ? cols : group);
  return bits + (16.0 + (sym ? 0.0 : bits)) / g;
}

void check_finite_weights(const float* w, int64_t rows, int64_t cols, std::string_view name) {
  for (int64_t i = 0; i < rows * cols; ++i)
    QUANT_CHECK(std::isfinite(w[i]), "tensor {}: weight is not finite at row {} column {}", name, i / cols, i % cols);
}

GridParams fit_grid_group(const float* x, int64_t n, int64_t stride, const GridSpec& spec) {
  const int maxq = (1 << spec.bits) - 1;
  float xmin = 0.0f, xmax = 0.0f;  // the range always includes 0
  for (int64_t j = 0; j < n; ++j) {
    xmin = std::min(xmin, x[j * stride]);
    xmax = std::max(xmax, x[j * stride]);
  }
  if (spec.sym) {
    xmax = std::max(-xmin, xmax);
    xmin = -xmax;
  }
  if (xmin == 0.0f && xmax == 0.0f) {
    xmin = -1.0f;
    xmax = 1.0f;
  }
  auto grid = [&](float lo, float hi) -> GridParams {
    const float scale = (hi - lo) / static_cast<float>(maxq);
    return {scale, spec.sym ? static_cast<float>((maxq + 1) / 2) : std::nearbyint(-lo / scale)};
  };
  if (!spec.mse) return grid(xmin, xmax);
  // quant.py's find_params(mse=True): shrink the range by p = 1 - i/100, i < 80, keeping the
  // grid with the least sum |q(x) - x|^2.4 (ties keep the wider range).
  GridParams best = grid(xmin, xmax);
  double best_err = INFINITY;
  for (int i = 0; i < 80; ++i) {
    const float p = 1.0f - static_cast<float>(i) / 100.0f;
    const GridParams g = grid(p * xmin, p * xmax);
    double err = 0;
    for (int64_t j = 0; j < n && err < best_err; ++j) {
      const float v = x[j * stride];
      const float q = quant_code(v, g, maxq);
      const double d = std::fabs(static_cast<double>(g.scale * (q - g.zero)) - v);
      err += d * d * std::pow(d, 0.4);
    }
    if (err < best_err) {
      best_err = err;
      best = g;
    }
  }
  return best;
}

QuantWeight rtn_grid(const float* w, int64_t rows, int64_t cols, const GridSpec& spec) {
  QUANT_CHECK(GridSpec::valid_bits(spec.bits), "bits {} outside 2..8", spec.bits);
  const int64_t group = spec.group == 0 ? cols : spec.group;
  QUANT_CHECK(group > 0, "group size {} for {} columns", group, cols);
  QuantWeight q;
  q.rows = rows;
  q.cols = cols;
  q.bits = spec.bits;
  q.group = group;
  q.sym = spec.sym;
  const int64_t ng = q.n_groups();
  q.codes.resize(static_cast<size_t>(rows * cols));
  q.scales.resize(static_cast<size_t>(rows * ng));
  q.mins.resize(static_cast<size_t>(rows * ng));
  const int maxq = (1 << spec.bits) - 1;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < ng; ++g) {
      const int64_t len = std::min(group, cols - g * group);
      const float* x = w + r * cols + g * group;
      const GridParams p = fit_grid_group(x, len, 1, spec);
      uint8_t* c = q.codes.data() + r * cols + g * group;
      for (int64_t j = 0; j < len; ++j) {
        c[j] = static_cast<uint8_t>(quant_code(x[j], p, maxq));
      }
      q.scales[static_cast<size_t>(r * ng + g)] = p.scale;
      q.mins[static_cast<size_t>(r * ng + g)] = -p.zero * p.scale;
    }
  }
  return q;
}

StorageChoice storage_for_grid(const GridSpec& spec, int64_t cols) {
  const int64_t group = spec.group == 0 ? cols : spec.group;
  if (cols % 32 != 0 || group % 32 != 0)
    return {TType::F16, false,
            fmt::format("{} columns / group {} do not tile 32-blocks: stored as dequantized F16",
                        cols, group)};
  if (spec.bits <= 4)
    return {spec.sym ? TType::Q4_0 : TType::Q4_1, true,
            spec.bits == 4 ? "exact" : fmt::format("exact: {}-bit codes inside 4-bit blocks", spec.bits)};
  if (spec.bits == 5) return {spec.sym ? TType::Q5_0 : TType::Q5_1, true, "exact"};
  if (spec.sym || spec.bits <= 7)
    return {TType::Q8_0, true, fmt::format("exact: {}-bit codes minus zero as int8", spec.bits)};
  return {TType::F16, false, "int8 asym codes minus zero exceed int8: stored as dequantized F16"};
}

}  // namespace quant
