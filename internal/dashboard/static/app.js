// Rampart dashboard: a single-page application with hash routes. Pages
// poll the operator API every few seconds; text from the API is inserted
// with textContent only (dom.js).
import { api, devices, setToken, loggedIn, whenUnauthorized, APIError } from "./api.js";
import { h, replace, badge, empty, table, fmtInt, fmtPct, fmtDuration, fmtTime, fmtAgo } from "./dom.js";
import { donut, legend, bar, bars, spark } from "./charts.js";

const POLL_MS = 3000;
const root = document.getElementById("app");
let me = null;           // GET /api/v1/whoami
let current = null;      // the mounted page: {refresh()}
let pollTimer = null;
let refreshing = false;
let tamperHistory = [];  // [{t, v}] sampled by every overview refresh
let deviceSelector = "";
let auditState = null;

const may = (x) => me && me.may.includes(x);

// ---- login --------------------------------------------------------------

function renderLogin(message) {
  stopPolling();
  me = null;
  auditState = null;
  tamperHistory = [];
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", spellcheck: "false", placeholder: "rmp_…", required: true, "aria-label": "Operator token" });
  const err = h("div", { class: ["error", message ? null : "hidden"], id: "login-error" }, message || "");
  const submit = h("button", { class: "primary", type: "submit", id: "login-submit" }, "Sign in");
  const form = h("form", { id: "login-form" },
    h("label", { class: "field", for: "token" }, "Operator token", input), submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    input.value = "";
    if (!t) return;
    submit.disabled = true;
    setToken(t);
    try {
      me = await api.whoami();
      if (!location.hash || location.hash === "#/" || location.hash === "#") location.hash = defaultRoute();
      renderShell();
    } catch (e) {
      setToken(null);
      replace(err, e instanceof APIError && e.status === 401 ? "That token is not valid: " + e.message : "Cannot sign in: " + e.message);
      err.classList.remove("hidden");
      submit.disabled = false;
      input.focus();
    }
  });
  replace(root, h("div", { class: "login" }, h("div", { class: "card" },
    h("div", { class: "brand" }, h("img", { src: "favicon.svg", alt: "" }), "Rampart"),
    h("p", "Fleet dashboard. Sign in with an operator token (rampart token create). It is kept in this tab's memory only: reloading signs you out."),
    form, err,
    h("div", { class: "foot" }, "Roles decide what you can do here; the server enforces the same."))));
  root.classList.remove("loading");
  input.focus();
}

whenUnauthorized((message) => {
  if (loggedIn()) {
    setToken(null);
    renderLogin("Signed out: " + message);
  }
});

function logout() {
  setToken(null);
  history.replaceState(null, "", location.pathname);
  renderLogin();
}

// ---- shell and routing --------------------------------------------------

const NAV = [
  { route: "overview", label: "Overview", ok: () => may("read-fleet") },
  { route: "devices", label: "Devices", ok: () => may("read-fleet") },
  { route: "releases", label: "Releases", ok: () => may("read-fleet") || (me && me.role === "release-manager") },
  { route: "rollouts", label: "Rollouts", ok: () => may("read-fleet") },
  { route: "keys", label: "Keys & incidents", ok: () => may("read-fleet") },
  { route: "audit", label: "Audit log", ok: () => may("read-audit") },
];

function defaultRoute() {
  const n = NAV.find((x) => x.ok());
  return "#/" + (n ? n.route : "overview");
}

let mainEl = null, navEl = null, liveEl = null;

function renderShell() {
  navEl = h("nav", { class: "nav", "aria-label": "Pages" });
  for (const n of NAV) if (n.ok()) navEl.append(h("a", { href: "#/" + n.route, "data-route": n.route }, n.label));
  const out = h("button", { type: "button", id: "logout" }, "Sign out");
  out.addEventListener("click", logout);
  mainEl = h("main", { id: "main" });
  replace(root,
    h("header", { class: "topbar" },
      h("a", { class: "brand", href: "#/overview" }, h("img", { src: "favicon.svg", alt: "" }), "Rampart"),
      navEl,
      h("div", { class: "who" }, h("span", { class: "name" }, me.name), h("span", { class: "role", id: "role" }, me.role), out)),
    mainEl);
  root.classList.remove("loading");
  route();
}

function route() {
  if (!me) return;
  const parts = (location.hash.replace(/^#\/?/, "") || defaultRoute().slice(2)).split("/").map(decodeURIComponent);
  const name = parts[0];
  for (const a of navEl.querySelectorAll("a")) a.classList.toggle("active", a.dataset.route === name);
  const pages = { overview: overviewPage, devices: parts[1] ? () => devicePage(parts[1]) : devicesPage, releases: releasesPage,
    rollouts: parts[1] ? () => rolloutPage(parts[1]) : rolloutsPage, keys: keysPage, audit: auditPage };
  const nav = NAV.find((x) => x.route === name);
  const make = pages[name];
  stopPolling();
  mainEl.replaceChildren();
  if (!make || (nav && !nav.ok())) {
    mainEl.append(empty("Nothing here", "This page does not exist or your role may not see it."));
    return;
  }
  liveEl = h("span", { class: "live", id: "live" }, "Live");
  current = make();
  window.scrollTo(0, 0);
  tick();
  pollTimer = setInterval(tick, POLL_MS);
}

function stopPolling() {
  if (pollTimer) clearInterval(pollTimer);
  pollTimer = null;
  current = null;
}

async function tick() {
  if (refreshing || !current) return;
  refreshing = true;
  const page = current;
  try {
    await page.refresh();
    if (liveEl) { liveEl.classList.remove("stale"); replace(liveEl, "Live · updated " + new Date().toLocaleTimeString("en-GB")); }
  } catch (e) {
    if (liveEl && !(e instanceof APIError && e.status === 401)) { liveEl.classList.add("stale"); replace(liveEl, "Update failed: " + e.message); }
    if (page.failed) page.failed(e);
  } finally {
    refreshing = false;
  }
}

function head(title, subtitle, crumbs) {
  return h("div", { class: "page-head" },
    h("div", crumbs ? h("div", { class: "crumbs" }, crumbs) : null, h("h1", title), subtitle ? h("p", subtitle) : null),
    liveEl);
}

function card(title, body, extra) {
  return h("section", { class: "card" }, h("h2", h("span", title), extra || null), body);
}

// slot is a container whose content a refresh replaces.
function slot(cls) { return h("div", { class: cls || null }); }

// ---- overview -----------------------------------------------------------

const STATES = ["installed", "downloading", "downloaded", "installing", "rolled-back", "failed", "verification-refused", "enrolled", "revoked"];

function overviewPage() {
  const kpis = slot("grid kpis"), byRelease = slot(), byState = slot(), tamper = slot(), active = slot();
  mainEl.append(head("Fleet overview", "Devices, update health and tamper detections across the fleet."), kpis,
    h("div", { class: "grid two" }, card("Devices by release", byRelease), card("Devices by state", byState)),
    h("div", { class: "grid two", id: "overview-lower" }, card("Tamper detections", tamper), card("Active rollouts", active, h("a", { href: "#/rollouts", class: "small" }, "All rollouts"))));
  mainEl.querySelectorAll(".grid.two").forEach((g) => g.classList.add("stack-gap"));
  return {
    async refresh() {
      const [st, ds, ros] = await Promise.all([api.stats(), devices("", 5000), api.rollouts()]);
      const tamperTotal = Object.values(st.tamper_detections || {}).reduce((a, b) => a + b, 0);
      tamperHistory.push({ t: Date.now(), v: tamperTotal });
      if (tamperHistory.length > 400) tamperHistory.shift();
      replace(kpis,
        kpi("Devices", fmtInt(st.devices), "enrolled, not revoked", null, "kpi-devices"),
        kpi("Update success", fmtPct(st.update_success_rate), "confirmed installs over attempts", st.update_success_rate === null ? null : st.update_success_rate >= 0.98 ? "ok" : "bad", "kpi-success"),
        kpi("Time to recover", fmtDuration(st.mttr_s), "mean, after a key revocation", null, "kpi-mttr"),
        kpi("Time to install", fmtDuration(st.time_to_install_p50_s), "p50 · p95 " + fmtDuration(st.time_to_install_p95_s), null, "kpi-install"),
        kpi("Tamper detections", fmtInt(tamperTotal), "refused as tampered", tamperTotal > 0 ? "bad" : "ok", "kpi-tamper"));

      const versions = Object.entries(st.by_version || {}).sort((a, b) => b[1] - a[1]);
      const parts = versions.map(([v, n], i) => ({ label: v, value: n, cls: v === "none" ? "s-pending" : "c" + (i % 8) }));
      replace(byRelease, st.devices === 0 ? empty("No devices yet", "Enroll a device (rampart device token) and it appears here.")
        : h("div", { class: "donut-wrap" }, donut(parts, "devices"), legend(parts)));

      const counts = {};
      for (const d of ds.devices) counts[d.state] = (counts[d.state] || 0) + 1;
      const rows = STATES.filter((x) => counts[x]).map((x) => ({ label: x, value: counts[x], cls: "s-" + x }));
      for (const [k, v] of Object.entries(counts)) if (!STATES.includes(k)) rows.push({ label: k, value: v, cls: "s-other" });
      replace(byState, rows.length ? bars(rows) : empty("No devices yet", "Device states appear after their first report."),
        ds.more ? h("p", { class: "small muted" }, "Counted over the first 5,000 devices.") : null);

      const classes = Object.entries(st.tamper_detections || {}).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
      replace(tamper,
        h("div", { class: "small muted" }, "Devices that refused tampered data, since this page opened"),
        h("div", { class: "spark" }, spark(tamperHistory, "tamper detections over time")), h("div", { class: "spacer-s" }),
        classes.length ? h("div", { class: "bars", id: "tamper-classes" }, bars(classes.map(([c, n]) => ({ label: c, value: n, cls: "s-refused" }))))
          : empty("No tampering detected", "Devices refusing altered or replayed updates are counted here by class."));

      const act = (ros.rollouts || []).filter((r) => ["running", "paused", "waiting-approval"].includes(r.state)).slice(0, 5);
      replace(active, act.length ? act.map(rolloutRow) : empty("No active rollouts", "Start one with rampart rollout create."));
    },
  };
}

function kpi(label, value, sub, cls, id) {
  return h("div", { class: ["card", "kpi", cls], id }, h("div", { class: "label" }, label), h("div", { class: "value" }, value), h("div", { class: "sub" }, sub));
}

// ---- devices ------------------------------------------------------------

function devicesPage() {
  const input = h("input", { class: "wide", id: "selector", value: deviceSelector, placeholder: 'CEL selector, e.g. hardware == "acme-gw-rev2" && version != "1.1.0"', "aria-label": "Selector" });
  const apply = h("button", { class: "primary", type: "submit", id: "apply-selector" }, "Filter");
  const clear = h("button", { type: "button" }, "Clear");
  const form = h("form", { class: "filters" }, input, apply, clear);
  const err = slot(), list = slot(), count = h("span", { class: "small muted" });
  form.addEventListener("submit", (ev) => { ev.preventDefault(); deviceSelector = input.value.trim(); tick(); });
  clear.addEventListener("click", () => { input.value = ""; deviceSelector = ""; tick(); });
  mainEl.append(head("Devices", "Filter with a CEL selector over id, hardware, tags, version, security_version and risk."),
    form, err, card("Devices", list, count));
  return {
    async refresh() {
      try {
        const ds = await devices(deviceSelector, 2000);
        replace(err);
        replace(count, fmtInt(ds.devices.length) + (ds.more ? "+" : "") + " shown");
        replace(list, ds.devices.length === 0
          ? empty(deviceSelector ? "No device matches" : "No devices yet", deviceSelector ? "Change the selector or clear it." : "Devices appear here once they enroll.")
          : table(["Device", "Hardware", "Release", "#Security", "State", "Last seen", "Last refusal", "Tags"],
            ds.devices.map((d) => [h("a", { href: "#/devices/" + encodeURIComponent(d.id), class: "mono" }, d.id), d.hardware, d.version || "—",
              fmtInt(d.security_version), badge(d.state), fmtAgo(d.last_seen), d.last_refusal ? badge(d.last_refusal, "bad") : "—", tags(d.tags)])));
      } catch (e) {
        if (e instanceof APIError && e.status === 400) { replace(err, h("div", { class: "error", id: "selector-error" }, e.message)); return; }
        throw e;
      }
    },
  };
}

function tags(t) {
  const e = Object.entries(t || {});
  return e.length ? e.map(([k, v]) => h("span", { class: "tag" }, k + "=" + v)) : h("span", { class: "muted" }, "—");
}

function devicePage(id) {
  const facts = slot(), slots = slot(), counts = slot(), reports = slot();
  mainEl.append(head(id, null, h("a", { href: "#/devices" }, "← Devices")),
    h("div", { class: "grid two" }, card("Device", facts), h("div", { class: "stack" }, card("Slots and assignment", slots), card("Reports by status", counts))),
    h("div", { class: "spacer" }), card("Report history", reports, h("span", { class: "small muted" }, "latest 32, newest first")));
  return {
    async refresh() {
      const d = await api.device(id);
      replace(facts, h("dl", { class: "facts" },
        h("dt", "State"), h("dd", badge(d.state)),
        h("dt", "Hardware"), h("dd", { class: "mono" }, d.hardware),
        h("dt", "Enrolled"), h("dd", fmtTime(d.enrolled_at)),
        h("dt", "Last seen"), h("dd", fmtAgo(d.last_seen), " · ", fmtTime(d.last_seen)),
        h("dt", "Last status"), h("dd", d.last_status ? badge(d.last_status) : "—"),
        h("dt", "Last refusal"), h("dd", d.last_refusal ? badge(d.last_refusal, "bad") : "none"),
        h("dt", "Anomalies"), h("dd", fmtInt(d.anomalies), d.last_anomaly ? " · " + d.last_anomaly : ""),
        h("dt", "Revoked"), h("dd", d.revoked ? badge("revoked", "bad") : "no"),
        h("dt", "Tags"), h("dd", tags(d.tags))));
      const pending = d.assigned && d.assigned.split("/")[1] !== d.version;
      replace(slots, h("dl", { class: "facts" },
        h("dt", "Running"), h("dd", h("strong", d.version || "nothing reported yet"), d.version ? h("span", { class: "muted" }, " · security version " + d.security_version) : null),
        h("dt", "Other slot"), h("dd", { class: "muted" }, d.last_status === "rolled-back" ? "held the release that failed its trial boot" : "previous release, kept for rollback"),
        h("dt", "Assigned"), h("dd", d.assigned ? h("span", { class: "mono" }, d.assigned) : "none", pending ? " " : null, pending ? badge("update pending", "info") : null)));
      const rc = Object.entries(d.report_counts || {}).sort((a, b) => b[1] - a[1]);
      replace(counts, rc.length ? bars(rc.map(([k, n]) => ({ label: k, value: n, cls: "s-" + (STATES.includes(k) ? k : "other") }))) : empty("No reports yet"));
      const rs = d.reports || [];
      replace(reports, rs.length === 0 ? empty("No reports yet", "The device reports after each step of an update.")
        : table(["#Counter", "Time", "Status", "Release", "#Security", "Reason"],
          rs.map((r) => [fmtInt(r.counter), fmtTime(r.at), badge(r.status), r.version || "—", fmtInt(r.security_version), r.reason ? h("span", { class: "mono" }, r.reason) : "—"])));
    },
    failed(e) { if (e instanceof APIError && e.status === 404) replace(facts, empty("Unknown device", "No device has the id " + id + ".")); },
  };
}

// ---- releases -----------------------------------------------------------

function releasesPage() {
  const list = slot();
  mainEl.append(head("Releases", "Everything the image repository publishes now, newest first within each product."), card("Published releases", list));
  return {
    async refresh() {
      const rs = (await api.releases()).releases || [];
      replace(list, rs.length === 0 ? empty("No releases yet", "Push one with rampart repo push.")
        : table(["Release", "#Security", "Hardware", "Signed by", "Threshold", "#Log index", "Log proof", "Status", "Published"],
          rs.map((r) => [h("div", h("strong", r.product + " " + r.version), h("div", { class: "mono muted small" }, r.target)), fmtInt(r.security_version),
            (r.hardware || []).map((x) => h("span", { class: "tag" }, x)),
            h("div", (r.signed_by && r.signed_by.length ? r.signed_by : r.signers || []).map((k) => h("div", { class: "mono small", title: k }, k.slice(0, 16) + "…"))),
            h("div", badge(r.threshold_met ? "met" : "not met", r.threshold_met ? "ok" : "bad"),
              h("div", { class: "small muted" }, (r.signers || []).length + " verify, " + r.threshold + " needed")),
            r.log_index === null || r.log_index === undefined ? badge("not logged", "warn") : fmtInt(r.log_index),
            logProof(r),
            r.revoked_key ? badge("signer revoked", "bad") : badge("valid", "ok"), fmtTime(r.created)])));
    },
  };
}

// The server checks each release's inclusion proof as a device would
// (api.Release.LogProof); a failure's reason is the badge's title.
function logProof(r) {
  switch (r.log_proof) {
    case "verified": return badge("verifies", "ok");
    case "failed": return h("span", { title: r.log_proof_error || "" }, badge("fails", "bad"));
    case "not-logged": return badge("not logged", "warn");
  }
  return badge("unchecked", "warn");
}

// ---- rollouts -----------------------------------------------------------

const COUNT_KEYS = ["installed", "downloading", "installing", "pending", "rolled-back", "failed", "refused", "policy-denied"];

function segs(c) { return COUNT_KEYS.map((k) => ({ label: k, value: c[k] || 0, cls: "s-" + k })); }

function rolloutRow(r) {
  const c = r.counts || {};
  const total = Math.max(r.eligible || 0, COUNT_KEYS.reduce((a, k) => a + (c[k] || 0), 0));
  return h("div", { class: "rollout-row" },
    h("div", h("a", { href: "#/rollouts/" + encodeURIComponent(r.id), class: "title" }, r.release), h("div", { class: "small muted mono" }, r.id)),
    h("div", bar(segs(c), total), h("div", { class: "small muted" }, fmtInt(c.installed || 0) + " installed of " + fmtInt(r.eligible) + " in its phases so far · phase " + r.phase + " of " + (r.phases || []).length)),
    badge(r.state));
}

function rolloutsPage() {
  const list = slot();
  mainEl.append(head("Rollouts", "Phased rollouts, newest first. Each phase installs and soaks before the next."), card("Rollouts", list));
  return {
    async refresh() {
      const rs = (await api.rollouts()).rollouts || [];
      replace(list, rs.length ? rs.map(rolloutRow) : empty("No rollouts yet", "Create one with rampart rollout create."));
    },
  };
}

function rolloutPage(id) {
  const gate = slot(), phases = slot(), counts = slot(), reasons = slot(), facts = slot(), actions = slot(), msg = slot();
  let last = null, confirming = null, busy = false;
  mainEl.append(head("Rollout", null, h("a", { href: "#/rollouts" }, "← Rollouts")),
    h("div", { class: "grid two" },
      h("div", { class: "stack" }, card("Progress", h("div", gate, phases)), card("Devices", counts)),
      h("div", { class: "stack" }, may("steer-rollouts") ? card("Actions", h("div", actions, msg)) : null, card("Failure reasons", reasons), card("Settings", facts))));
  const title = mainEl.querySelector("h1");

  async function act(action) {
    const input = document.getElementById("action-reason");
    const reason = input ? input.value.trim() : "";
    busy = true;
    drawActions();
    try {
      last = await api.rolloutAction(id, action, reason);
      confirming = null;
      replace(msg, h("div", { class: "notice", id: "action-result" }, "Done: the rollout is " + last.state + "."));
      draw(last);
    } catch (e) {
      replace(msg, h("div", { class: "error", id: "action-result" }, e.message));
    } finally {
      busy = false;
      drawActions();
    }
  }

  function button(action, label, cls, confirm) {
    const b = h("button", { type: "button", class: cls, id: "action-" + action, disabled: busy }, label);
    b.addEventListener("click", () => { if (confirm) { confirming = action; drawActions(); } else act(action); });
    return b;
  }

  function drawActions() {
    if (!may("steer-rollouts") || !last) return;
    const st = last.state;
    const btns = [];
    if (st === "running" || st === "waiting-approval") btns.push(button("pause", "Pause", "primary"));
    if (st === "paused") btns.push(button("resume", "Resume", "primary"));
    if (st === "waiting-approval") btns.push(button("approve", "Approve", "primary"));
    if (["running", "paused", "waiting-approval"].includes(st)) btns.push(button("abort", "Abort…", "ghost-danger", true));
    const reason = document.getElementById("action-reason");
    const keep = reason ? reason.value : "";
    const fields = btns.length ? h("div", { class: "filters" }, h("input", { id: "action-reason", value: keep, maxlength: 256, placeholder: "Reason (optional, audited)", "aria-label": "Reason" })) : null;
    const conf = confirming === "abort" ? h("div", { class: "confirm", id: "confirm-abort" },
      h("p", "Abort this rollout? Devices not yet updated will not be offered " + last.release + ". An aborted rollout cannot be resumed."),
      h("div", { class: "actions" }, button("abort", "Abort rollout", "danger"), cancelButton())) : null;
    if (conf) conf.querySelector("#action-abort").id = "confirm-abort-yes";
    if (conf) conf.querySelector("#confirm-abort-yes").addEventListener("click", () => act("abort"), { once: true });
    replace(actions, btns.length ? [fields, h("div", { class: "actions" }, btns), conf] : h("p", { class: "muted small" }, "No action applies to a " + st + " rollout."));
  }

  function cancelButton() {
    const b = h("button", { type: "button" }, "Cancel");
    b.addEventListener("click", () => { confirming = null; drawActions(); });
    return b;
  }

  function draw(r) {
    replace(title, r.release);
    const c = r.counts || {};
    const failures = (c["rolled-back"] || 0) + (c.failed || 0);
    const attempts = failures + (c.installed || 0);
    replace(gate, h("div", { class: ["gate", r.state] },
      badge(r.state),
      h("div", h("div", h("strong", gateText(r))), r.paused_reason ? h("div", { class: "small", id: "paused-reason" }, r.paused_reason) : null,
        h("div", { class: "small muted" }, "Failure rate " + (attempts ? fmtPct(failures / attempts) : "—") + " (gate " + r.max_failure_rate + ") · soak " + r.soak + " · at least " + r.min_success + " successes",
          r.window ? " · window " + r.window + (r.window_open ? " (open)" : " (closed, opens " + fmtTime(r.window_opens) + ")") : ""))));
    // eligible counts the devices the phases so far hold, so the current
    // phase's bar is its installed devices over them; earlier phases
    // passed their gate; later ones hold nobody yet.
    const installed = c.installed || 0, eligible = r.eligible || 0;
    replace(phases, (r.phases || []).map((p, i) => {
      const stt = i + 1 < r.phase || r.state === "completed" ? "done" : i + 1 === r.phase ? (r.state === "running" ? "current" : r.state) : "upcoming";
      const segsOf = stt === "done" ? [{ label: "passed", value: 1, cls: "s-installed" }] : stt === "upcoming" ? [] : [{ label: "installed", value: installed, cls: "s-installed" }];
      const total = stt === "done" ? 1 : Math.max(eligible, 1);
      const label = stt === "done" ? "passed" : stt === "upcoming" ? "—" : fmtInt(installed) + "/" + fmtInt(eligible);
      return h("div", { class: "phase", "data-phase": i + 1 },
        h("div", h("strong", "Phase " + (i + 1)), h("span", { class: "muted" }, " · " + p)),
        bar(segsOf, total, 12),
        h("div", { class: "st small" }, h("span", { class: "phase-count" }, label), " ", badge(stt, stt === "done" ? "ok" : stt === "current" ? "info" : stt === "upcoming" ? "" : undefined)));
    }));
    replace(counts, bar(segs(c), Math.max(r.eligible || 0, 1), 14), h("div", { class: "spacer-s" }),
      bars(COUNT_KEYS.map((k) => ({ label: k, value: c[k] || 0, cls: "s-" + k }))));
    const fr = Object.entries(r.failure_reasons || {}).sort((a, b) => b[1] - a[1]);
    replace(reasons, fr.length ? table(["Reason", "#Devices"], fr.map(([k, n]) => [h("span", { class: "mono" }, k), fmtInt(n)])) : empty("No failures", "Rollbacks and failed installs are listed here with the agent's reason."));
    replace(facts, h("dl", { class: "facts" },
      h("dt", "Id"), h("dd", { class: "mono" }, r.id),
      h("dt", "Selector"), h("dd", { class: "mono" }, r.select || "every device"),
      h("dt", "Eligible"), h("dd", fmtInt(r.eligible)),
      h("dt", "Phases"), h("dd", (r.phases || []).join(" → ")),
      h("dt", "Created"), h("dd", fmtTime(r.created_at), " by ", r.created_by),
      r.approved_by ? [h("dt", "Approved by"), h("dd", r.approved_by)] : null,
      h("dt", "Phase started"), h("dd", fmtTime(r.phase_started)),
      h("dt", "Critical"), h("dd", r.critical ? "yes" : "no")));
    drawActions();
  }

  return {
    async refresh() {
      if (busy) return;
      last = await api.rollout(id);
      draw(last);
    },
    failed(e) { if (e instanceof APIError && e.status === 404) replace(gate, empty("Unknown rollout", "No rollout has the id " + id + ".")); },
  };
}

function gateText(r) {
  switch (r.state) {
    case "running": return "Phase " + r.phase + " of " + (r.phases || []).length + " is rolling out; the gate opens after its soak.";
    case "paused": return "Paused at phase " + r.phase + ".";
    case "waiting-approval": return "Waiting for approval before phase " + r.phase + ".";
    case "completed": return "Completed: every phase passed its gate.";
    case "aborted": return "Aborted.";
    default: return r.state;
  }
}

// ---- keys and incidents -------------------------------------------------

function keysPage() {
  const list = slot(), manual = slot(), result = slot(), incidents = slot();
  let confirming = null;
  mainEl.append(head("Keys & incidents", "Signing keys seen on published releases. Revoking one aborts its rollouts and starts recovery."),
    card("Release signing keys", list), may("revoke-keys") ? card("Revoke a key by id", h("div", manual, result)) : null,
    card("Recent incidents", incidents));

  function confirmBox(keyID) {
    const reason = h("input", { id: "revoke-reason", maxlength: 256, placeholder: "Reason (required, audited)", "aria-label": "Reason" });
    const yes = h("button", { type: "button", class: "danger", id: "confirm-revoke" }, "Revoke key");
    const no = h("button", { type: "button" }, "Cancel");
    const err = slot();
    yes.addEventListener("click", async () => {
      if (!reason.value.trim()) { replace(err, h("div", { class: "error" }, "Give a reason: it is recorded in the audit log.")); return; }
      yes.disabled = true;
      try {
        const out = await api.revokeKey(keyID, reason.value.trim());
        confirming = null;
        replace(result, h("div", { class: "notice", id: "revoke-result" },
          "Revoked " + out.key_id + " (" + out.kind + (out.role ? ", " + out.role : "") + "). Halted rollouts: " + ((out.halted_rollouts || []).join(", ") || "none") +
          ". Releases: " + ((out.releases || []).join(", ") || "none") + ". Devices affected: " + (out.devices || []).length + (out.devices_more ? "+" + out.devices_more : "") + "."),
        (out.rotation_steps || []).length ? h("div", h("h3", "Next, offline"), h("ol", { class: "small mono" }, out.rotation_steps.map((x) => h("li", x)))) : null);
        tick();
      } catch (e) {
        replace(err, h("div", { class: "error" }, e.message));
        yes.disabled = false;
      }
    });
    no.addEventListener("click", () => { confirming = null; tick(); replace(manual, manualForm()); });
    return h("div", { class: "confirm", id: "confirm-box" },
      h("p", "Revoke key ", h("strong", { class: "mono" }, keyID), "? Every rollout of a release it signed is aborted for good, and new rollouts of those releases are refused."),
      h("div", { class: "filters" }, reason), h("div", { class: "actions" }, yes, no), err);
  }

  function ask(keyID) {
    confirming = keyID;
    replace(manual, confirmBox(keyID));
    manual.scrollIntoView({ block: "center" });
  }

  function manualForm() {
    const input = h("input", { class: "wide", id: "key-id", placeholder: "key id (16–128 hex digits)", "aria-label": "Key id" });
    const go = h("button", { type: "submit", class: "ghost-danger" }, "Revoke…");
    const f = h("form", { class: "filters" }, input, go);
    f.addEventListener("submit", (ev) => { ev.preventDefault(); if (input.value.trim()) ask(input.value.trim()); });
    return f;
  }
  if (may("revoke-keys")) replace(manual, manualForm());

  return {
    async refresh() {
      const [rs, ros] = await Promise.all([api.releases(), api.rollouts()]);
      const keys = new Map();
      for (const r of rs.releases || []) {
        for (const k of new Set([...(r.signed_by || []), ...(r.signers || [])])) {
          if (!keys.has(k)) keys.set(k, { releases: [], products: new Set(), revoked: false });
          const e = keys.get(k);
          e.products.add(r.product);
          if ((r.signed_by || []).includes(k)) e.releases.push(r.product + " " + r.version);
          if (r.revoked_key && (r.signed_by || []).includes(k)) e.revoked = true;
        }
      }
      replace(list, keys.size === 0 ? empty("No signing keys yet", "Keys appear once a signed release is published.")
        : table(["Key id", "Signed", "Status", may("revoke-keys") ? "Action" : null].filter(Boolean), [...keys].map(([k, e]) => [h("span", { class: "mono" }, k),
          h("span", { class: "small" }, e.releases.length ? e.releases.join(", ") : "nothing yet (a delegated key of " + [...e.products].join(", ") + ")"), e.revoked ? badge("revoked", "bad") : badge("trusted", "ok"),
          may("revoke-keys") ? (e.revoked ? "—" : revokeButton(k)) : null].filter((c) => c !== null))));
      const halted = (ros.rollouts || []).filter((r) => r.state === "aborted" || (r.state === "paused" && r.paused_reason));
      replace(incidents, halted.length === 0 ? empty("No incidents", "Aborted and paused rollouts, with their reasons, appear here.")
        : table(["Rollout", "State", "Reason"], halted.map((r) => [h("a", { href: "#/rollouts/" + encodeURIComponent(r.id) }, r.release), badge(r.state), r.paused_reason || "—"])));
      if (confirming && !document.getElementById("confirm-box")) replace(manual, confirmBox(confirming));
    },
  };

  function revokeButton(k) {
    const b = h("button", { type: "button", class: "ghost-danger revoke-key", "data-key": k }, "Revoke…");
    b.addEventListener("click", () => ask(k));
    return b;
  }
}

// ---- audit --------------------------------------------------------------

function auditPage() {
  if (!auditState) auditState = { after: 0, entries: [], filters: { actor: "", action: "", outcome: "", text: "" } };
  const A = auditState;
  const mk = (key, ph) => {
    const i = h("input", { id: "audit-" + key, value: A.filters[key], placeholder: ph, "aria-label": ph });
    i.addEventListener("input", () => { A.filters[key] = i.value.trim(); draw(); });
    return i;
  };
  const outcome = h("select", { id: "audit-outcome", "aria-label": "Outcome" }, ["", "ok", "refused", "denied"].map((o) => h("option", { value: o }, o || "any outcome")));
  outcome.value = A.filters.outcome;
  outcome.addEventListener("change", () => { A.filters.outcome = outcome.value; draw(); });
  const list = slot(), count = h("span", { class: "small muted" });
  mainEl.append(head("Audit log", "Every action and refusal, hash-chained (rampart audit verify). Newest first."),
    h("div", { class: "filters" }, mk("actor", "Actor"), mk("action", "Action"), outcome, mk("text", "Search subject and details")),
    card("Entries", list, count));

  function draw() {
    const f = A.filters;
    const m = (v, x) => !x || String(v || "").toLowerCase().includes(x.toLowerCase());
    const shown = A.entries.filter((e) => m(e.actor, f.actor) && m(e.action, f.action) && (!f.outcome || e.outcome === f.outcome) &&
      m(e.subject + " " + JSON.stringify(e.detail || {}), f.text)).reverse();
    replace(count, (shown.length > 50 ? "newest 50 of " : "") + fmtInt(shown.length) + " matching · " + fmtInt(A.entries.length) + " loaded");
    replace(list, shown.length === 0 ? empty(A.entries.length ? "No entry matches" : "The audit log is empty", A.entries.length ? "Loosen the filters." : "")
      : table(["#Seq", "Time", "Actor", "Action", "Subject", "Outcome", "Details"], shown.slice(0, 50).map((e) => [fmtInt(e.seq), fmtTime(e.time),
        h("span", { class: "mono" }, e.actor), h("strong", e.action), h("span", { class: "mono" }, e.subject || "—"), badge(e.outcome, e.outcome === "ok" ? "ok" : e.outcome === "denied" ? "warn" : "bad"),
        h("span", { class: "small muted" }, Object.entries(e.detail || {}).map(([k, v]) => k + "=" + v).join(" · ") || "—")])));
  }

  return {
    async refresh() {
      for (let i = 0; i < 20; i++) {
        let text;
        try {
          text = await api.auditPage(A.after, 5000);
        } catch (e) {
          if (e instanceof APIError && e.code === "audit-pruned") { A.after = (await api.auditAnchor()).seq; continue; }
          throw e;
        }
        const lines = text.split("\n").filter(Boolean);
        if (lines.length === 0) break;
        for (const l of lines) { const e = JSON.parse(l); A.entries.push(e); A.after = e.seq; }
        if (A.entries.length > 5000) A.entries.splice(0, A.entries.length - 5000);
      }
      draw();
    },
  };
}

// ---- start --------------------------------------------------------------

window.addEventListener("hashchange", () => { if (me) route(); });
renderLogin();
