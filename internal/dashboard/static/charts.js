// Small charts drawn as inline SVG. Colours come from CSS classes (the
// Content-Security-Policy allows no style attributes).
import { h, s, fmtInt } from "./dom.js";

// donut draws parts [{label, value, cls}] as a ring with the total inside.
export function donut(parts, caption) {
  const total = parts.reduce((a, p) => a + p.value, 0);
  const R = 50, r = 34, cx = 60, cy = 60;
  const svg = s("svg", { viewBox: "0 0 120 120", class: "chart", role: "img", "aria-label": caption });
  if (total === 0) {
    svg.append(s("circle", { cx, cy, r: R, class: "s-pending" }));
  } else {
    let a0 = -Math.PI / 2;
    for (const p of parts) {
      if (p.value <= 0) continue;
      const frac = p.value / total;
      if (frac >= 0.9999) {
        svg.append(s("circle", { cx, cy, r: R, class: p.cls }));
        break;
      }
      const a1 = a0 + frac * 2 * Math.PI;
      const large = frac > 0.5 ? 1 : 0;
      const d = `M ${cx} ${cy} L ${cx + R * Math.cos(a0)} ${cy + R * Math.sin(a0)} A ${R} ${R} 0 ${large} 1 ${cx + R * Math.cos(a1)} ${cy + R * Math.sin(a1)} Z`;
      svg.append(s("path", { d, class: p.cls }, s("title", `${p.label}: ${p.value}`)));
      a0 = a1;
    }
  }
  svg.append(s("circle", { cx, cy, r, class: "donut-hole" }));
  svg.append(s("text", { x: cx, y: cy + 4, "text-anchor": "middle", class: "donut-total" }, fmtInt(total)));
  svg.append(s("text", { x: cx, y: cy + 18, "text-anchor": "middle", class: "donut-caption" }, caption));
  return svg;
}

export function legend(parts) {
  return h("ul", { class: "legend" }, parts.map((p) =>
    h("li", h("span", { class: ["sw", p.cls] }), h("span", { class: "mono" }, p.label), h("span", { class: "n" }, fmtInt(p.value)))));
}

// width classes: bar widths are SVG rectangles, not style attributes.
function barSVG(segments, total, height) {
  const svg = s("svg", { viewBox: `0 0 1000 ${height}`, preserveAspectRatio: "none", class: "chart", role: "img" });
  svg.append(s("rect", { x: 0, y: 0, width: 1000, height, rx: height / 2, class: "s-pending" }));
  let x = 0;
  for (const seg of segments) {
    if (!seg.value || !total) continue;
    const w = Math.max(2, (seg.value / total) * 1000);
    svg.append(s("rect", { x, y: 0, width: Math.min(w, 1000 - x), height, class: seg.cls }, s("title", `${seg.label}: ${seg.value}`)));
    x += w;
  }
  return svg;
}

// bar is a progress bar of stacked segments [{label, value, cls}] out of total.
export function bar(segments, total, height = 10) {
  return h("div", { class: ["barbox", height > 10 ? "h" + height : null] }, barSVG(segments, total, height));
}

// bars draws one horizontal bar per row [{label, value, cls}].
export function bars(rows) {
  const max = Math.max(1, ...rows.map((r) => r.value));
  return h("div", { class: "bars" }, rows.map((r) =>
    h("div", { class: "bar-row" }, h("span", r.label), bar([{ label: r.label, value: r.value, cls: r.cls }], max), h("span", { class: "n" }, fmtInt(r.value)))));
}

// spark draws a time series [{t, v}] as an area chart with its last value.
export function spark(points, label) {
  const W = 560, H = 150, pad = 16;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
  for (const f of [0.5, 1]) svg.append(s("line", { x1: 0, y1: H - pad - f * (H - 2 * pad), x2: W, y2: H - pad - f * (H - 2 * pad), class: "axis grid-line" }));
  svg.append(s("line", { x1: 0, y1: H - pad, x2: W, y2: H - pad, class: "axis" }));
  if (points.length === 0) return svg;
  const t0 = points[0].t, t1 = Math.max(points[points.length - 1].t, t0 + 1);
  const vmax = Math.max(1, ...points.map((p) => p.v));
  const X = (t) => ((t - t0) / (t1 - t0)) * (W - 2);
  const Y = (v) => H - pad - (v / vmax) * (H - 2 * pad);
  let line = "";
  points.forEach((p, i) => { line += (i ? " L " : "M ") + X(p.t).toFixed(1) + " " + Y(p.v).toFixed(1); });
  if (points.length === 1) line += ` L ${W - 2} ${Y(points[0].v).toFixed(1)}`;
  const lastX = points.length === 1 ? W - 2 : X(points[points.length - 1].t);
  svg.append(s("path", { d: `${line} L ${lastX.toFixed(1)} ${H - pad} L ${X(t0).toFixed(1)} ${H - pad} Z`, class: "spark-area" }));
  svg.append(s("path", { d: line, class: "spark-line" }));
  svg.append(s("text", { x: 2, y: pad - 4, class: "axis-label" }, String(vmax)));
  svg.append(s("text", { x: W - 2, y: H - 2, "text-anchor": "end", class: "axis-label" }, "now"));
  svg.append(s("text", { x: 2, y: H - 2, class: "axis-label" }, new Date(t0).toLocaleTimeString("en-GB")));
  return svg;
}
