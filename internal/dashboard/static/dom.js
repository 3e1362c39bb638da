// DOM helpers. Text is only ever inserted as text nodes (textContent):
// strings from the API, device-supplied ones included, are never parsed
// as HTML (no HTML-parsing property or call is used anywhere here; a
// test checks).

const SVGNS = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "class") {
      el.setAttribute("class", Array.isArray(v) ? v.filter(Boolean).join(" ") : v);
    } else if (k === "value") {
      el.value = v;
    } else if (k === "href" && !String(v).startsWith("#")) {
      throw new Error("dashboard links stay inside the dashboard");
    } else {
      el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  return el;
}

// h builds an HTML element: h("td", {class: "num"}, "text", child, ...).
export function h(tag, attrs, ...children) {
  if (attrs instanceof Node || typeof attrs !== "object" || attrs === null || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  return append(setAttrs(document.createElement(tag), attrs), children);
}

// s builds an SVG element.
export function s(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS(SVGNS, tag), attrs || {}), children);
}

// replace puts children in place of el's content.
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function fmtInt(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

export function fmtPct(x) {
  if (x === null || x === undefined) return "—";
  const p = x * 100;
  return (p >= 99.95 || p === 0 ? p.toFixed(0) : p.toFixed(1)) + "%";
}

export function fmtDuration(sec) {
  if (sec === null || sec === undefined) return "—";
  if (sec < 1) return "<1 s";
  if (sec < 90) return Math.round(sec) + " s";
  if (sec < 5400) return Math.round(sec / 60) + " min";
  if (sec < 172800) return (sec / 3600).toFixed(1) + " h";
  return (sec / 86400).toFixed(1) + " d";
}

export function fmtTime(t) {
  if (!t) return "—";
  const d = new Date(t);
  if (isNaN(d) || d.getUTCFullYear() < 2000) return "—";
  return d.toLocaleString("en-GB", { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function fmtAgo(t) {
  if (!t) return "never";
  const d = new Date(t);
  if (isNaN(d) || d.getUTCFullYear() < 2000) return "never";
  const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

// stateClass maps a device or rollout state to a badge colour.
export function stateClass(state) {
  switch (state) {
    case "installed": case "completed": case "running": case "success": case "ok": return "ok";
    case "downloading": case "downloaded": case "installing": case "waiting-approval": return "info";
    case "paused": case "rolled-back": case "policy-denied": case "denied": return "warn";
    case "failed": case "aborted": case "revoked": case "verification-refused": case "refused": return "bad";
    default: return "";
  }
}

export function badge(text, cls) {
  return h("span", { class: ["badge", cls === undefined ? stateClass(text) : cls] }, text);
}

export function empty(title, text) {
  return h("div", { class: "empty" }, h("strong", title), text || "");
}

// table builds a table from column headings and rows of cells; a
// heading starting with "#" is a numeric column.
export function table(heads, rows) {
  const num = heads.map((x) => x.startsWith("#"));
  return h("div", { class: "table-wrap" }, h("table",
    h("thead", h("tr", heads.map((x, i) => h("th", { class: num[i] ? "num" : null }, num[i] ? x.slice(1) : x)))),
    h("tbody", rows.map((r) => h("tr", r.map((c, i) => h("td", { class: num[i] ? "num" : null }, c)))))));
}
