// SVG scatter and heatmap plots (see svg.h).
#include "svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace quant::cli {

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string colormap(double t) {
  // Viridis at 0, 0.25, 0.5, 0.75, 1.
  static const double stops[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0) * 4;
  const int i = std::min(3, static_cast<int>(t));
  const double f = t - i;
  int c[3];
  for (int k = 0; k < 3; ++k) c[k] = static_cast<int>(std::lround(stops[i][k] + f * (stops[i + 1][k] - stops[i][k])));
  return fmt::format("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]);
}

std::vector<double> nice_ticks(double lo, double hi, int n) {
  if (!(hi > lo)) {
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / std::max(1, n);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

namespace {

std::string num(double v) {
  if (v == 0) return "0";
  const double a = std::fabs(v);
  if (a >= 1e4 || a < 1e-3) return fmt::format("{:.0e}", v);
  if (a >= 100) return fmt::format("{:.0f}", v);
  if (a >= 10) return fmt::format("{:.1f}", v);
  if (a >= 1) return fmt::format("{:.2f}", v);
  return fmt::format("{:.3g}", v);
}

struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  double px0 = 0, px1 = 1;  // pixel range
  double map(double v) const {
    const double a = log ? std::log10(lo) : lo, b = log ? std::log10(hi) : hi;
    const double x = log ? std::log10(v) : v;
    return px0 + (x - a) / (b - a) * (px1 - px0);
  }
  std::vector<double> ticks() const {
    if (!log) return nice_ticks(lo, hi, 6);
    std::vector<double> t;
    for (double d = std::floor(std::log10(lo)); d <= std::ceil(std::log10(hi)); ++d) {
      const double v = std::pow(10.0, d);
      if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) t.push_back(v);
    }
    if (t.size() < 2)  // a narrow log range: linear ticks inside it
      t = nice_ticks(lo, hi, 4);
    return t;
  }
};

Axis make_axis(std::vector<double> v, bool log, double px0, double px1) {
  Axis a;
  a.log = log;
  a.px0 = px0;
  a.px1 = px1;
  if (log) v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !(x > 0); }), v.end());
  if (v.empty()) v = {1};
  double lo = *std::min_element(v.begin(), v.end()), hi = *std::max_element(v.begin(), v.end());
  if (log) {
    if (hi <= lo) {
      lo /= 2;
      hi *= 2;
    }
    const double pad = std::pow(hi / lo, 0.06);
    lo /= pad;
    hi *= pad;
  } else {
    const double pad = hi > lo ? (hi - lo) * 0.08 : (lo == 0 ? 1 : std::fabs(lo) * 0.05);
    lo -= pad;
    hi += pad;
  }
  a.lo = lo;
  a.hi = hi;
  return a;
}

}  // namespace

std::string scatter_svg(const ScatterSpec& s) {
  const double L = 78, R = 24, T = 40, B = 56;
  const double W = s.width, H = s.height;
  std::vector<double> xs, ys;
  for (const auto& p : s.points) {
    xs.push_back(p.x);
    ys.push_back(p.y);
  }
  const Axis ax = make_axis(xs, s.log_x, L, W - R), ay = make_axis(ys, s.log_y, H - B, T);
  std::string o = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" id=\"{}\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"12\" data-marks=\"{}\">\n",
      xml_escape(s.id), s.width, s.height, s.width, s.height, s.points.size());
  o += fmt::format("<rect x=\"0\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#ffffff\"/>\n", W, H);
  o += fmt::format("<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>\n", W / 2,
                   xml_escape(s.title));
  for (double t : ax.ticks()) {
    const double x = ax.map(t);
    o += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#e4e4e4\"/>\n", x, T, H - B);
    o += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x, H - B + 16, num(t));
  }
  for (double t : ay.ticks()) {
    const double y = ay.map(t);
    o += fmt::format("<line x1=\"{1}\" y1=\"{0:.1f}\" x2=\"{2}\" y2=\"{0:.1f}\" stroke=\"#e4e4e4\"/>\n", y, L, W - R);
    o += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", L - 6, y + 4, num(t));
  }
  o += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n", L, T, W - L - R, H - T - B);
  o += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", (L + W - R) / 2, H - 14, xml_escape(s.x_label));
  o += fmt::format("<text x=\"16\" y=\"{0}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {0})\">{1}</text>\n", (T + H - B) / 2,
                   xml_escape(s.y_label));
  if (s.pareto && !s.points.empty()) {
    std::vector<ScatterPoint> p = s.points;
    std::sort(p.begin(), p.end(), [](const auto& a, const auto& b) { return a.x != b.x ? a.x < b.x : a.y < b.y; });
    std::string pts;
    double best = std::numeric_limits<double>::infinity();
    for (const auto& q : p)
      if (q.y < best) {
        best = q.y;
        pts += fmt::format("{:.1f},{:.1f} ", ax.map(q.x), ay.map(q.y));
      }
    o += fmt::format("<polyline class=\"pareto\" points=\"{}\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" "
                     "stroke-dasharray=\"6 3\"/>\n",
                     pts);
  }
  int labelled = 0;
  for (const auto& p : s.points) {
    if ((s.log_x && !(p.x > 0)) || (s.log_y && !(p.y > 0))) continue;
    const double x = ax.map(p.x), y = ay.map(p.y);
    o += fmt::format("<circle class=\"mark\" cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"5\" fill=\"{}\" stroke=\"#222\"><title>{}</title></circle>\n", x,
                     y, p.accent ? "#ff7f0e" : "#1f77b4", xml_escape(fmt::format("{}: {} , {}", p.label, num(p.x), num(p.y))));
    if (!p.label.empty())  // alternately above and below the mark, so neighbours do not overprint
      o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\">{}</text>\n", x + 7, labelled++ % 2 ? y + 15 : y - 6,
                       xml_escape(p.label));
  }
  o += "</svg>\n";
  return o;
}

std::string heatmap_svg(const HeatmapSpec& s) {
  size_t longest = 4;
  for (const auto& r : s.rows) longest = std::max(longest, r.size());
  const double label_w = 20 + 7.0 * static_cast<double>(longest);
  const double T = 58, bar_w = 110;
  const double W = std::max(label_w + s.cell_w * static_cast<double>(s.cols.size()) + bar_w,
                            40 + 8.5 * static_cast<double>(s.title.size()));
  const double H = T + s.cell_h * static_cast<double>(s.rows.size()) + 20;
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  int64_t cells = 0;
  for (const auto& r : s.values)
    for (double v : r)
      if (std::isfinite(v) && (!s.log_color || v > 0)) {
        lo = std::min(lo, v);
        hi = std::max(hi, v);
        ++cells;
      }
  if (!(hi >= lo)) lo = hi = 1;
  auto t_of = [&](double v) {
    if (s.log_color) return hi > lo ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : 0.5;
    return hi > lo ? (v - lo) / (hi - lo) : 0.5;
  };
  std::string o = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" id=\"{}\" width=\"{:.0f}\" height=\"{:.0f}\" viewBox=\"0 0 {:.0f} {:.0f}\" "
      "font-family=\"sans-serif\" font-size=\"11\" data-marks=\"{}\">\n",
      xml_escape(s.id), W, H, W, H, cells);
  o += fmt::format("<rect x=\"0\" y=\"0\" width=\"{:.0f}\" height=\"{:.0f}\" fill=\"#ffffff\"/>\n", W, H);
  o += fmt::format("<text x=\"{:.0f}\" y=\"20\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>\n", W / 2,
                   xml_escape(s.title));
  for (size_t c = 0; c < s.cols.size(); ++c)
    o += fmt::format("<text x=\"{:.1f}\" y=\"{:.0f}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\n",
                     label_w + s.cell_w * (static_cast<double>(c) + 0.5), T - 8, xml_escape(s.cols[c]));
  for (size_t r = 0; r < s.rows.size(); ++r) {
    const double y = T + s.cell_h * static_cast<double>(r);
    o += fmt::format("<text x=\"{:.0f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", label_w - 6, y + s.cell_h * 0.75,
                     xml_escape(s.rows[r]));
    for (size_t c = 0; c < s.cols.size(); ++c) {
      const double v = c < s.values[r].size() ? s.values[r][c] : std::nan("");
      const bool ok = std::isfinite(v) && (!s.log_color || v > 0);
      const double t = ok ? t_of(v) : 0;
      o += fmt::format("<rect class=\"cell\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"#fff\">"
                       "<title>{}</title></rect>\n",
                       label_w + s.cell_w * static_cast<double>(c), y, s.cell_w, s.cell_h, ok ? colormap(t) : "#cccccc",
                       xml_escape(fmt::format("{} @ {}: {}", s.rows[r], s.cols[c], ok ? fmt::format("{:.4g}", v) : "n/a")));
      if (ok)
        o += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" font-size=\"9\" fill=\"{}\">{}</text>\n",
                         label_w + s.cell_w * (static_cast<double>(c) + 0.5), y + s.cell_h * 0.72, t > 0.6 ? "#000" : "#fff",
                         fmt::format("{:.2g}", v));
    }
  }
  // Colour bar.
  const double bx = label_w + s.cell_w * static_cast<double>(s.cols.size()) + 18, bh = std::max(60.0, H - T - 30);
  o += "<defs><linearGradient id=\"" + xml_escape(s.id) + "-grad\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (int i = 0; i <= 10; ++i) o += fmt::format("<stop offset=\"{:.1f}\" stop-color=\"{}\"/>", i / 10.0, colormap(i / 10.0));
  o += "</linearGradient></defs>\n";
  o += fmt::format("<rect x=\"{:.0f}\" y=\"{:.0f}\" width=\"14\" height=\"{:.0f}\" fill=\"url(#{}-grad)\" stroke=\"#444\"/>\n", bx, T, bh,
                   xml_escape(s.id));
  o += fmt::format("<text x=\"{:.0f}\" y=\"{:.0f}\">{:.3g}</text>\n", bx + 18, T + 8, hi);
  o += fmt::format("<text x=\"{:.0f}\" y=\"{:.0f}\">{:.3g}</text>\n", bx + 18, T + bh, lo);
  o += fmt::format("<text x=\"{:.0f}\" y=\"{:.0f}\" font-size=\"10\">{}{}</text>\n", bx - 4, T - 24, xml_escape(s.value_label),
                   s.log_color ? " (log)" : "");
  o += "</svg>\n";
  return o;
}

}  // namespace quant::cli
