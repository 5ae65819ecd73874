// The joulestream dashboard: a single page over the public API (/api/v1, and the gateway's /v1/receipts).
// The credential lives in sessionStorage only; a sign-in link's token (#signin=…) is exchanged once for a
// session key and removed from the URL at once. Every API error is shown as a readable message.
"use strict";

const KEY = "joulestream.credential";
const API = "/api/v1";
const WINDOWS = ["24h", "7d", "30d", "1y", "ytd"];
const GRANULARITIES = ["auto", "hour", "day", "week", "month"];
const GROUPS = ["model", "project", "provider", "routing_tier"];
const $ = (id) => document.getElementById(id);
const fmt = (v) => Charts.fmt(v);
const state = { session: null, projects: null, prefs: { last: "30d", granularity: "auto", group_by: "model" } };

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// ------------------------------------------------------------------------------------------ the API

function describe(status, body) {
  let detail = body && body.detail !== undefined ? body.detail : body && body.error ? body.error.message : null;
  if (Array.isArray(detail)) {
    detail = detail.map((e) => `${(e.loc || []).filter((p) => p !== "query" && p !== "body").join(".")}: ${e.msg}`)
      .join("; ");
  } else if (detail && typeof detail === "object") detail = JSON.stringify(detail);
  const what = {
    401: "Not signed in: the key is wrong, revoked or expired",
    402: "This needs a paid plan",
    403: "Not allowed for this key",
    404: "Not found",
    422: "The request was not accepted",
    429: "Too many requests: try again in a minute",
  }[status] || (status >= 500 ? "The server could not answer" : "The request failed");
  return `${what} (HTTP ${status})${detail ? ": " + detail : ""}`;
}

async function call(path, { method = "GET", body, auth = true, raw = false } = {}) {
  const headers = {};
  const cred = sessionStorage.getItem(KEY);
  if (auth && cred) headers.Authorization = "Bearer " + cred;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "Cannot reach the API: " + e.message);
  }
  if (!r.ok) {
    let parsed = null;
    try {
      parsed = await r.json();
    } catch (e) { /* not JSON */ }
    throw new ApiError(r.status, describe(r.status, parsed));
  }
  if (raw) return r;
  if (r.status === 204) return null;
  return r.json();
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") p.append(k, v);
  return p.toString();
}

function showError(err) {
  const box = $("error");
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = err.message || String(err);
  box.hidden = false;
  if (err.status === 401 && state.session) signOut(false, err.message);
}

// ------------------------------------------------------------------------------------------ sign-in

async function exchangeLink() {
  const m = location.hash.match(/^#signin=([A-Za-z0-9_-]{20,100})$/);
  if (!m) return;
  history.replaceState(null, "", location.pathname + "#/overview"); // the token leaves the URL at once
  try {
    const out = await call(API + "/dashboard/sign-in", { method: "POST", body: { token: m[1] }, auth: false });
    sessionStorage.setItem(KEY, out.api_key);
  } catch (e) {
    showError(e);
  }
}

async function loadSession() {
  try {
    state.session = await call(API + "/dashboard/session");
    return true;
  } catch (e) {
    sessionStorage.removeItem(KEY);
    state.session = null;
    showError(e);
    return false;
  }
}

function showSignedIn() {
  const s = state.session;
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("org").textContent = `${s.org_name || s.org_slug} (${s.org_slug}) · ${s.scopes.join(", ")}`;
  const d = $("dagster");
  d.hidden = !s.dagster_url;
  if (s.dagster_url) d.href = s.dagster_url;
}

function showSignIn() {
  $("signin").hidden = false;
  $("nav").hidden = true;
  $("who").hidden = true;
  $("page").replaceChildren();
  $("key").value = "";
  $("key").focus();
}

async function signOut(revoke = true, message = null) {
  if (revoke && sessionStorage.getItem(KEY)) {
    try {
      await call(API + "/dashboard/sign-out", { method: "POST" });
    } catch (e) { /* signed out locally anyway */ }
  }
  sessionStorage.removeItem(KEY);
  state.session = null;
  state.projects = null;
  Charts.clear();
  showSignIn();
  if (message) showError(new Error(message + " — sign in again."));
  else showError(null);
}

// ------------------------------------------------------------------------------------------ pages

function windowControls(onChange, { granularity = true, group = false } = {}) {
  const sel = (name, values, current, label) => h("label", {}, label,
    h("select", {
      name, onchange: (e) => {
        state.prefs[name] = e.target.value;
        onChange();
      },
    }, values.map((v) => h("option", { value: v, selected: v === current }, v))));
  return h("div", { class: "controls" },
    sel("last", WINDOWS, state.prefs.last, "Window"),
    granularity ? sel("granularity", GRANULARITIES, state.prefs.granularity, "Granularity") : null,
    group ? sel("group_by", GROUPS, state.prefs.group_by, "Stack by") : null);
}

function windowParams() {
  const g = state.prefs.granularity;
  return { last: state.prefs.last, granularity: g === "auto" ? null : g };
}

async function projectNames() {
  if (!state.projects) {
    const out = await call(API + "/metrics/by-project?" + qs({ last: "1y" }));
    state.projects = Object.fromEntries(out.projects.map((p) => [p.project_id, p.project || p.project_id]));
  }
  return state.projects;
}

const TILES = [
  ["energy_kwh", "Energy", "kWh"],
  ["co2e_grams", "CO2e, location-based (Scope 2)", "g"],
  ["co2e_market_grams", "CO2e, market-based (Scope 2)", "g"],
  ["embodied_co2e_grams", "Embodied (Scope 3)", "g"],
  ["water_ml", "Water", "mL"],
  ["total_cost", "Cost", "USD"],
];

function tile(summary, [field, title, unit]) {
  const v = summary[field];
  const lo = summary[field + "_low"];
  const hi = summary[field + "_high"];
  const measured = summary.measured_energy_share;
  return h("article", { class: "tile", dataset: { figure: field, value: v === null ? "" : String(v) } },
    h("h3", {}, title),
    h("div", { class: "value" }, v === null ? "no data" : `${fmt(v)} ${unit}`),
    lo !== undefined ? h("div", { class: "band" }, `low–high ${fmt(lo)}–${fmt(hi)} ${unit}`) : null,
    h("div", { class: "share" }, measured === undefined || measured === null ? "" :
      `${fmt(100 * measured)}% measured · ${fmt(100 * (1 - measured))}% estimated energy`));
}

async function overview(page) {
  const body = h("div", {});
  page.append(h("h1", {}, "Overview"), windowControls(() => route(), { group: true }), body);
  const p = windowParams();
  const [summary, ts, names] = await Promise.all([
    call(API + "/metrics/summary?" + qs({ last: p.last })),
    call(API + "/metrics/timeseries?" + qs({
      ...p, group_by: state.prefs.group_by, fields: "co2e_grams,co2e_grams_low,co2e_grams_high",
    })),
    state.prefs.group_by === "project" ? projectNames() : Promise.resolve({}),
  ]);
  const chart = h("div", { id: "chart" });
  body.append(
    h("p", { class: "muted" }, `${summary.events} events · ${fmt(100 * summary.estimated_share)}% of events estimated · ` +
      `factor versions ${(summary.factors_versions || []).join(", ") || "–"} · window ${summary.window.label || p.last}`),
    h("div", { class: "tiles", id: "tiles" }, TILES.map((t) => tile(summary, t))),
    chart);
  Charts.stacked(chart, ts, {
    title: `CO2e by ${state.prefs.group_by}, ${p.last}`,
    rename: (n, key) => (key && key.project_id && names[key.project_id]) || n,
  });
}

function sortable(columns, rows, { id, caption }) {
  // columns: [key, label, numeric, render?]; click a header (or Enter on it) to sort
  let sortKey = null;
  let dir = -1;
  const t = h("table", { id });
  if (caption) t.appendChild(h("caption", { class: "muted" }, caption));
  const head = h("tr", {});
  const tbody = h("tbody", {});
  const max = {};
  columns.forEach(([k, , num]) => {
    if (num) max[k] = Math.max(0, ...rows.map((r) => r[k] || 0));
  });
  const draw = () => {
    const sorted = [...rows];
    if (sortKey) sorted.sort((a, b) => ((a[sortKey] ?? -Infinity) > (b[sortKey] ?? -Infinity) ? 1 : -1) * dir);
    tbody.replaceChildren(...sorted.map((r) => h("tr", {}, columns.map(([k, , num, render], i) => {
      const v = r[k];
      const text = render ? render(v, r) : num ? fmt(v) : v ?? "–";
      const bar = num && i === 1 && max[k] ? h("span", { class: "bar", style: `width:${Math.round(60 * (v || 0) / max[k])}px` }) : null;
      return h("td", { class: num ? "num" : null }, text, bar);
    }))));
    head.querySelectorAll("th").forEach((th) => {
      th.setAttribute("aria-sort", th.dataset.key === sortKey ? (dir > 0 ? "ascending" : "descending") : "none");
    });
  };
  columns.forEach(([k, label, num]) => head.appendChild(h("th", { scope: "col", class: num ? "num" : null, dataset: { key: k } },
    h("button", {
      type: "button", onclick: () => {
        dir = sortKey === k ? -dir : -1;
        sortKey = k;
        draw();
      },
    }, label))));
  t.append(h("thead", {}, head), tbody);
  draw();
  return h("div", { class: "table-wrap" }, t);
}

const FIG_COLUMNS = [
  ["co2e_grams", "CO2e (g)", true], ["co2e_market_grams", "market (g)", true], ["energy_kwh", "kWh", true],
  ["requests", "requests", true], ["total_tokens", "tokens", true], ["water_ml", "water (mL)", true],
  ["total_cost", "cost (USD)", true],
];

async function breakdown(page) {
  const body = h("div", {});
  page.append(h("h1", {}, "Breakdown"), windowControls(() => route(), { granularity: false }), body);
  const last = state.prefs.last;
  const [projects, models] = await Promise.all([
    call(API + "/metrics/by-project?" + qs({ last })),
    call(API + "/metrics/top-models?" + qs({ last, limit: 20 })),
  ]);
  const prow = projects.projects.map((p) => ({ ...p, name: p.project || p.project_id }));
  body.append(
    h("h2", {}, "Projects"),
    sortable([["name", "project"], ...FIG_COLUMNS], prow, { id: "by-project" }),
    h("h2", {}, "Top models by CO2e"),
    sortable([["model", "model"], ...FIG_COLUMNS, ["provider", "provider"]], models.models, { id: "top-models" }));
}

function recRow(r, saved) {
  const act = async (how) => {
    const path = `${API}/recommendations/${encodeURIComponent(r.id)}/` + (how === "restore" ? "ignore" : how);
    try {
      await call(path, { method: how === "restore" ? "DELETE" : "PATCH" });
      showError(null);
      route();
    } catch (e) {
      showError(e);
    }
  };
  const buttons = r.status === "active"
    ? [h("button", { type: "button", class: "primary", onclick: () => act("apply") }, "Apply"),
      h("button", { type: "button", onclick: () => act("ignore") }, "Ignore")]
    : r.status === "ignored" ? [h("button", { type: "button", onclick: () => act("restore") }, "Restore")] : [];
  return h("tr", { dataset: { recId: r.id, status: r.status } },
    h("td", {}, h("strong", {}, r.type.replaceAll("_", " ").toLowerCase()), h("div", {}, r.description)),
    h("td", { dataset: { label: "priority" } }, r.priority),
    h("td", { class: "num", dataset: { label: "kg CO2e / year" } }, fmt(r.potential_savings_co2e_grams / 1000)),
    h("td", { class: "num", dataset: { label: "USD / year" } }, r.potential_savings_cost === null ? "–" : fmt(r.potential_savings_cost)),
    h("td", { class: "status", dataset: { label: "status" } }, r.status),
    r.status === "applied" ? h("td", { class: "num", dataset: { label: "reported kg CO2e" } },
      r.realized_savings_co2e_grams === null ? "not reported" : fmt(r.realized_savings_co2e_grams / 1000)) : null,
    r.status === "applied" ? h("td", { class: "num measured", dataset: { label: "measured kg CO2e since applied" } },
      saved && saved.measured ? fmt(saved.measured.co2e_grams / 1000) : "not measured yet") : null,
    h("td", {}, h("div", { class: "actions" }, buttons)));
}

function recTable(rows, id, savings) {
  if (!rows.length) return h("p", { class: "muted", id }, "None.");
  const applied = savings !== undefined;
  return h("div", { class: "table-wrap" }, h("table", { id, class: "cards" },
    h("thead", {}, h("tr", {}, ["recommendation", "priority", applied ? "claimed kg CO2e / year" : "kg CO2e / year",
      "USD / year", "status", applied ? "reported kg CO2e" : null, applied ? "measured kg CO2e since applied" : null, ""]
      .filter((x) => x !== null).map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.map((r) => recRow(r, applied ? savings[r.id] : null)))));
}

async function recommendations(page) {
  page.append(h("h1", {}, "Recommendations"));
  const [active, ignored, applied, savings] = await Promise.all([
    call(API + "/recommendations"),
    call(API + "/recommendations/ignored"),
    call(API + "/recommendations/applied"),
    call(API + "/recommendations/savings"),
  ]);
  const saved = Object.fromEntries(savings.recommendations.map((x) => [x.id, x]));
  const act = active.recommendations.filter((r) => r.status === "active");
  page.append(
    h("p", { class: "muted" }, "Savings are per year, location-based CO2e; applying needs the admin scope. " +
      "Applied ones show the claimed saving, the one reported when applying, and the one measured since then."),
    h("h2", {}, `Active (${act.length})`), recTable(act, "recs-active"),
    h("h2", {}, `Applied (${applied.recommendations.length})`), recTable(applied.recommendations, "recs-applied", saved),
    h("h2", {}, `Ignored (${ignored.recommendations.length})`), recTable(ignored.recommendations, "recs-ignored"));
}

function drivers(obj, prefix = "") {
  // {drivers: {grid_g_per_kwh: 370.5}} → "grid g per kwh: 370.5"
  return Object.entries(obj || {}).map(([k, v]) => {
    const name = (k === "drivers" ? "" : k.replaceAll("_", " "));
    const label = prefix && name ? `${prefix} ${name}` : prefix || name;
    if (v && typeof v === "object" && !Array.isArray(v)) return drivers(v, label);
    return `${label}: ${typeof v === "number" ? fmt(v) : Array.isArray(v) ? v.join(", ") : v}`;
  }).filter(Boolean).join(" · ");
}

async function sustainability(page) {
  const body = h("div", {});
  page.append(h("h1", {}, "Sustainability"), windowControls(() => route(), { granularity: false }), body);
  const s = await call(API + "/sustainability?" + qs({ last: state.prefs.last }));
  const dims = Object.entries(s.dimension_scores || {});
  body.append(
    h("p", {}, "Overall score ", h("span", { class: "score", id: "score" }, s.overall_score === null ? "–" : fmt(s.overall_score)), " / 100"),
    h("div", { class: "table-wrap" }, h("table", { id: "dimensions" },
      h("thead", {}, h("tr", {}, ["dimension", "score", "weight", "what drove it"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, dims.map(([k, d]) => h("tr", {},
        h("td", {}, k.replaceAll("_", " ")), h("td", { class: "num" }, fmt(d.score)),
        h("td", { class: "num" }, fmt(100 * d.weight) + "%"),
        h("td", {}, drivers(Object.fromEntries(Object.entries(d).filter(([n]) => n !== "score" && n !== "weight"))))))))));
}

async function totalsBy(group, last) {
  const ts = await call(API + "/metrics/timeseries?" + qs({
    last, granularity: "year", group_by: group, fields: "requests,energy_kwh,co2e_grams", max_series: 50,
  }));
  return ts.series.map((s) => {
    const sum = (f) => s.points.reduce((a, p) => a + (p[f] || 0), 0);
    const requests = sum("requests");
    const kwh = sum("energy_kwh");
    return { name: Charts.label(s.key), requests, energy_kwh: kwh, co2e_grams: sum("co2e_grams"),
      wh_per_request: requests ? (1000 * kwh) / requests : null };
  });
}

async function gateway(page) {
  const body = h("div", {});
  page.append(h("h1", {}, "Gateway"), windowControls(() => route(), { granularity: false }), body);
  const cols = (n) => [["name", n], ["requests", "requests", true], ["energy_kwh", "kWh", true],
    ["wh_per_request", "Wh / request", true], ["co2e_grams", "CO2e (g)", true]];
  const [tiers, upstreams] = await Promise.all([totalsBy("routing_tier", state.prefs.last), totalsBy("provider", state.prefs.last)]);
  const out = h("div", { id: "verdict", "aria-live": "polite" });
  const id = h("input", { id: "receipt-id", name: "receipt-id", placeholder: "receipt id (X-Receipt-Id header)", spellcheck: "false" });
  const text = h("textarea", { id: "receipt-json", name: "receipt-json", "aria-label": "Receipt JSON" });
  const verify = async () => {
    out.replaceChildren(h("span", { class: "loading" }, "verifying…"));
    let rec;
    try {
      rec = JSON.parse(text.value);
    } catch (e) {
      out.replaceChildren(h("span", { class: "verdict invalid" }, "invalid: not JSON (" + e.message + ")"));
      return;
    }
    try {
      const pk = await call("/v1/receipts/public-key", { auth: false });
      const v = await Receipts.verify(rec, pk.keys);
      out.replaceChildren(h("span", { class: "verdict " + (v.valid ? "valid" : "invalid") }, (v.valid ? "valid: " : "invalid: ") + v.reason));
    } catch (e) {
      out.replaceChildren(h("span", { class: "verdict invalid" }, "cannot verify: " + e.message));
    }
  };
  const lookup = async (ev) => {
    ev.preventDefault();
    try {
      const rec = await call("/v1/receipts/" + encodeURIComponent(id.value.trim()));
      text.value = JSON.stringify({ payload: rec.payload, sha256: rec.sha256, signature: rec.signature,
        key_version: rec.key_version, algorithm: rec.algorithm }, null, 2);
      showError(null);
      await verify();
    } catch (e) {
      showError(e);
    }
  };
  body.append(
    h("h2", {}, "Requests by routing tier"), sortable(cols("tier"), tiers, { id: "by-tier" }),
    h("h2", {}, "Requests by upstream provider"), sortable(cols("provider"), upstreams, { id: "by-upstream" }),
    h("h2", {}, "Verify a receipt"),
    h("p", { class: "muted" }, "Each gateway response carries a signed receipt. Look one up by id, or paste a receipt; " +
      "the page checks its SHA-256 and Ed25519 signature itself, with the key from /v1/receipts/public-key."),
    h("form", { class: "controls", onsubmit: lookup }, h("label", { for: "receipt-id" }, "Receipt id", id),
      h("button", { type: "submit" }, "Look up and verify")),
    text, h("div", { class: "actions" }, h("button", { type: "button", id: "verify", onclick: verify }, "Verify pasted receipt")),
    out);
}

async function download(path, fallbackName) {
  try {
    const r = await call(path, { raw: true });
    const cd = r.headers.get("Content-Disposition") || "";
    const m = cd.match(/filename="([^"]+)"/);
    const url = URL.createObjectURL(await r.blob());
    const a = h("a", { href: url, download: m ? m[1] : fallbackName });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    showError(null);
  } catch (e) {
    showError(e);
  }
}

async function receipts(page) {
  page.append(h("h1", {}, "Monthly receipts and audit packs"));
  let list;
  try {
    list = await call(API + "/receipts?page_size=100");
  } catch (e) {
    if (e.status === 402) return page.append(h("p", { class: "muted" }, e.message));
    throw e;
  }
  page.append(list.receipts.length ? h("div", { class: "table-wrap" }, h("table", { id: "receipts" },
    h("thead", {}, h("tr", {}, ["serial", "period", "t CO2e retired", "credits", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, list.receipts.map((r) => {
      const ym = r.period_start.slice(0, 7).split("-");
      return h("tr", {}, h("td", {}, r.serial_number), h("td", {}, `${r.period_start.slice(0, 10)} – ${r.period_end.slice(0, 10)}`),
        h("td", { class: "num" }, fmt(r.co2_retired_kg / 1000)), h("td", {}, r.credit_serial_numbers.join(", ")),
        h("td", {}, h("div", { class: "actions" },
          h("button", { type: "button", onclick: () => download(r.pdf_url, r.serial_number + ".pdf") }, "PDF"),
          h("button", { type: "button", onclick: () => download(`${API}/export/audit-pack/${ym[0]}/${+ym[1]}`, "audit-pack.zip") }, "Audit pack"),
          h("a", { href: r.verification_url, target: "_blank", rel: "noopener noreferrer" }, "Public verification"))));
    })))) : h("p", { class: "muted" }, "No monthly receipt yet: the monthly close issues one per closed month."));
}

async function exportsPage(page) {
  page.append(h("h1", {}, "Exports"), windowControls(() => {}, { granularity: false }));
  const year = new Date().getUTCFullYear();
  const rep = (format, extra) => download(API + "/report/export?" + qs({ format, ...extra }), "report." + format);
  page.append(
    h("h2", {}, "Report (ESRS E1 figures, monthly rows)"),
    h("div", { class: "actions" }, ["csv", "json", "parquet"].map((f) =>
      h("button", { type: "button", onclick: () => rep(f, { last: state.prefs.last }) }, f.toUpperCase()))),
    h("h2", {}, "Annual report"),
    h("div", { class: "actions" }, [year, year - 1].map((y) =>
      h("button", { type: "button", onclick: () => rep("json", { years: y }) }, `${y} (JSON)`))),
    h("p", { class: "muted" }, "Every figure has its low/high bounds and the measured vs estimated share; see Methodology."));
}

async function connections(page) {
  page.append(h("h1", {}, "Connections"));
  const out = await call(API + "/connections");
  const admin = state.session.scopes.includes("admin");
  const sync = async (id) => {
    try {
      await call(`${API}/connections/${encodeURIComponent(id)}/sync`, { method: "POST" });
      route();
    } catch (e) {
      showError(e);
    }
  };
  page.append(out.connections.length ? h("div", { class: "table-wrap" }, h("table", { id: "connections" },
    h("thead", {}, h("tr", {}, ["provider", "status", "last poll", "next poll", "project", "last error", ""].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, out.connections.map((c) => h("tr", {}, h("td", {}, c.provider), h("td", {}, c.status),
      h("td", {}, c.last_polled_at || "never"), h("td", {}, c.next_poll_at || "–"), h("td", {}, c.project_name || "–"),
      h("td", {}, c.last_error || ""), h("td", {}, admin ? h("button", { type: "button", onclick: () => sync(c.id) }, "Sync now") : null))))))
    : h("p", { class: "muted" }, "No provider connection: add one with POST /api/v1/connections (an admin key)."));
}

async function methodology(page) {
  page.append(h("h1", {}, "Methodology"));
  const m = await call(API + "/methodology");
  page.append(
    h("p", {}, h("strong", {}, `Factor set ${m.version}`), ` published ${m.published_at}. ${m.description}`),
    h("p", {}, m.pipeline),
    h("h2", {}, "Formula"), h("ul", {}, (m.formula || []).map((f) => h("li", {}, h("code", {}, f)))),
    h("h2", {}, "Figures"), h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["field", "unit", "meaning"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, (m.figures || []).map((f) => h("tr", {}, h("td", {}, f.field), h("td", {}, f.unit), h("td", {}, f.meaning)))))),
    h("h2", {}, "Sources"), h("ul", { id: "sources" }, (m.sources || []).map((s) => h("li", {}, h("strong", {}, s.key), " ", s.citation))));
}

const PAGES = { overview, breakdown, recommendations, sustainability, gateway, receipts, exports: exportsPage, connections, methodology };

async function route() {
  if (!state.session) return;
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1] || "overview";
  const render = PAGES[name] || overview;
  document.querySelectorAll("nav a").forEach((a) => {
    if (a.getAttribute("href") === "#/" + name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  Charts.clear();
  const page = h("div", { dataset: { page: name, loading: "1" } });
  $("page").replaceChildren(page);
  try {
    await render(page);
  } catch (e) {
    showError(e);
  } finally {
    page.dataset.loading = "0";
  }
}

async function boot() {
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const v = $("key").value.trim();
    if (!v) return;
    sessionStorage.setItem(KEY, v);
    showError(null);
    if (await loadSession()) {
      showSignedIn();
      if (!location.hash.startsWith("#/")) location.hash = "#/overview";
      route();
    } else $("key").select();
  });
  $("signout").addEventListener("click", () => signOut(true));
  window.addEventListener("hashchange", () => route());
  await exchangeLink();
  if (sessionStorage.getItem(KEY) && (await loadSession())) {
    showSignedIn();
    route();
  } else showSignIn();
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", boot);
