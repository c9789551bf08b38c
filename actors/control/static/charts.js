// Time charts for the dashboard. Owns loading the vendored charting library (uPlot, a
// classic script in static/vendor/, loaded once and only when a chart is first drawn, so the
// other pages never pay for it) and one small wrapper per chart: series over time buckets,
// bars or lines, sized to their box and redrawn when the window is resized.

import { el } from "./state.js";

const VENDOR = "/static/vendor";
let library = null;

// The uPlot constructor (window.uPlot, set by the library's IIFE build).
export function loadCharts() {
  if (!library) {
    library = new Promise((resolve, reject) => {
      document.head.append(el("link", { rel: "stylesheet", href: `${VENDOR}/uPlot.min.css` }));
      document.head.append(el("script", {
        src: `${VENDOR}/uPlot.iife.min.js`,
        onload: () => resolve(window.uPlot),
        onerror: () => { library = null; reject(new Error("the charting library did not load")); },
      }));
    });
  }
  return library;
}

// A chart over time buckets. ``series``: [{label, color, bars?: true}]; at most two bar
// series a chart (they stand side by side in their bucket), any number of lines.
export class TimeChart {
  constructor(box, series, { unit = "", height = 190 } = {}) {
    this.box = box;
    this.series = series;
    this.unit = unit;
    this.height = height;
    this.plot = null;
    this.data = [[], ...series.map(() => [])];
  }

  // ``xs``: bucket starts in seconds; ``ys``: one array per series (null: no value).
  async set(xs, ys) {
    this.data = [xs, ...ys];
    const uPlot = await loadCharts();
    if (!this.plot) this.plot = this._make(uPlot);
    else this.plot.setData(this.data);
  }

  _width() { return Math.max(240, this.box.clientWidth || 0); }

  _make(uPlot) {
    const bars = this.series.filter((s) => s.bars).length;
    let nth = 0;
    const plot = new uPlot({
      width: this._width(), height: this.height,
      cursor: { drag: { x: false, y: false } },
      // Half a bucket of room either side, so the first and last bars are not cut.
      scales: { x: { time: true, range: (u, min, max) => {
        const xs = u.data[0];
        if (min === null || max === null) return [Date.now() / 1000 - 3600, Date.now() / 1000];
        const half = xs.length > 1 ? (xs[1] - xs[0]) / 2 : 1800;
        return [min - half, max + half];
      } } },
      axes: [{}, { values: (u, ticks) => ticks.map((v) => `${+v.toFixed(2)}${this.unit}`), size: this.unit ? 80 : 50 }],
      series: [{}, ...this.series.map((s) => {
        const line = { label: s.label, stroke: s.color, width: 2, spanGaps: !s.bars,
          value: (u, v) => (v === null || v === undefined ? "-" : `${+v.toFixed(1)}${this.unit}`) };
        if (!s.bars) return line;
        // Two bars of a bucket stand side by side: the first ends at the bucket's time, the
        // second starts there (uPlot's align -1 / 1); a lone bar is centred on it.
        const align = bars === 1 ? 0 : (nth++ === 0 ? -1 : 1);
        return { ...line, fill: `${s.color}cc`, width: 0, points: { show: false },
          paths: uPlot.paths.bars({ size: [bars === 1 ? 0.7 : 0.38, 60], align }) };
      })],
    }, this.data, this.box);
    window.addEventListener("resize", () => { if (this.box.clientWidth) plot.setSize({ width: this._width(), height: this.height }); });
    return plot;
  }

  // After the box was hidden (no width then): fit it again.
  fit() { if (this.plot && this.box.clientWidth) this.plot.setSize({ width: this._width(), height: this.height }); }
}
