// Small self-contained SVG plots for reports: a labelled scatter (with an optional Pareto front)
// and a heatmap with a colour bar. Pure functions of their inputs; no fonts or scripts needed.
#pragma once

#include <string>
#include <vector>

namespace quant::cli {

struct ScatterPoint {
  double x = 0, y = 0;
  std::string label;
  bool accent = false;  // drawn in the second colour (e.g. the base model)
};

struct ScatterSpec {
  std::string title, x_label, y_label, id;
  std::vector<ScatterPoint> points;
  bool log_x = false, log_y = false;
  bool pareto = false;  // join the points no other point beats on both axes (smaller is better)
  int width = 720, height = 420;
};
std::string scatter_svg(const ScatterSpec& s);

struct HeatmapSpec {
  std::string title, value_label, id;
  std::vector<std::string> rows, cols;
  std::vector<std::vector<double>> values;  // [rows][cols]; NaN: no value
  bool log_color = true;
  int cell_w = 64, cell_h = 16;
};
std::string heatmap_svg(const HeatmapSpec& s);

// &, <, >, " escaped for text and attributes.
std::string xml_escape(const std::string& s);
// Viridis-like colour for t in [0, 1], as #rrggbb.
std::string colormap(double t);
// "Nice" tick positions covering [lo, hi] (about n of them).
std::vector<double> nice_ticks(double lo, double hi, int n);

}  // namespace quant::cli
