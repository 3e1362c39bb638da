// The operator API client. The token lives in this module's memory only:
// never in a URL, a cookie or web storage, so a reload logs out and no
// request the browser makes on its own carries it (nothing for a
// cross-site request to ride on). Every call sends it as a bearer token.

let token = null;

export class APIError extends Error {
  constructor(status, code, message) {
    super(message || code || "HTTP " + status);
    this.status = status;
    this.code = code;
  }
}

export function setToken(t) { token = t; }
export function loggedIn() { return token !== null; }

let onUnauthorized = () => {};
export function whenUnauthorized(f) { onUnauthorized = f; }

async function call(method, path, body, raw) {
  const headers = { "Accept": "application/json" };
  if (token) headers["Authorization"] = "Bearer " + token;
  const init = { method, headers, credentials: "omit", cache: "no-store", redirect: "error", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (!resp.ok) {
    let code = "", message = resp.status + " " + resp.statusText;
    try {
      const e = (await resp.json()).error;
      if (e) { code = e.code; message = e.message; }
    } catch { /* not JSON */ }
    if (resp.status === 401) onUnauthorized(message);
    throw new APIError(resp.status, code, message);
  }
  if (raw) return resp.text();
  if (resp.status === 204) return null;
  return resp.json();
}

const q = (params) => {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") u.set(k, v);
  const s = u.toString();
  return s ? "?" + s : "";
};

export const api = {
  whoami: () => call("GET", "/api/v1/whoami"),
  stats: () => call("GET", "/api/v1/fleet/stats"),
  devicesPage: (select, after, limit) => call("GET", "/api/v1/devices" + q({ select, after, limit })),
  device: (id) => call("GET", "/api/v1/devices/" + encodeURIComponent(id)),
  releases: () => call("GET", "/api/v1/releases"),
  rollouts: () => call("GET", "/api/v1/rollouts"),
  rollout: (id) => call("GET", "/api/v1/rollouts/" + encodeURIComponent(id)),
  rolloutAction: (id, action, reason) =>
    call("POST", "/api/v1/rollouts/" + encodeURIComponent(id) + "/" + encodeURIComponent(action), reason ? { reason } : undefined),
  revokeKey: (keyID, reason) => call("POST", "/api/v1/incidents/revoke-key", { key_id: keyID, reason }),
  policy: () => call("GET", "/api/v1/policy"),
  auditPage: (after, limit) => call("GET", "/api/v1/audit" + q({ after, limit }), undefined, true),
  auditAnchor: () => call("GET", "/api/v1/audit/anchor"),
};

// devices lists the devices a selector picks, following pages up to max.
export async function devices(select, max = 5000) {
  const out = [];
  let after = "";
  for (let i = 0; i < 50 && out.length < max; i++) {
    const page = await api.devicesPage(select, after, Math.min(1000, max - out.length));
    out.push(...(page.devices || []));
    if (!page.next) return { devices: out, more: false };
    after = page.next;
  }
  return { devices: out, more: true };
}
