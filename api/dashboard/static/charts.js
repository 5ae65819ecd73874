// Stacked time-series charts over /metrics/timeseries, drawn with uPlot (installed from npm by `make`), each
// with its text equivalent: a caption with the totals and a table of every point.
"use strict";

const Charts = (() => {
  const PALETTE = ["#1b7f5f", "#2f6fb3", "#c2571a", "#7a4fb0", "#b3306b", "#4c8c2b", "#a8830f", "#2b8a9c",
    "#8c3b2b", "#5b6570", "#3d5a80", "#9c6644", "#6a994e", "#bc4749", "#577590", "#f28482", "#84a59d",
    "#6d597a", "#b56576", "#355070", "#999999"];
  const live = new Set();

  function label(key) {
    const v = Object.values(key || {});
    return v.length ? v.map((x) => (x === null || x === "" ? "(none)" : String(x))).join(" / ") : "all";
  }

  function bucketLabel(ts, granularity) {
    const d = new Date(ts);
    const iso = d.toISOString();
    return granularity === "hour" ? iso.slice(0, 13).replace("T", " ") + ":00" : iso.slice(0, 10);
  }

  // ts: the /metrics/timeseries answer (fields co2e_grams[_low|_high]); names: key label → display name
  function stacked(el, ts, opts) {
    const unit = opts.unit || "kg CO2e";
    const scale = opts.scale || 0.001; // grams → kg
    const f = opts.field || "co2e_grams";
    const series = ts.series || [];
    const rename = opts.rename || ((s) => s);
    const names = series.map((s) => rename(label(s.key), s.key));
    const xs = (series[0] ? series[0].points : []).map((p) => Date.parse(p.timestamp) / 1000);
    const ys = series.map((s) => s.points.map((p) => (p[f] || 0) * scale));
    const lo = xs.map((_, i) => series.reduce((a, s) => a + (s.points[i][f + "_low"] || 0) * scale, 0));
    const hi = xs.map((_, i) => series.reduce((a, s) => a + (s.points[i][f + "_high"] || 0) * scale, 0));
    const totals = ys.map((y) => y.reduce((a, b) => a + b, 0));
    const total = totals.reduce((a, b) => a + b, 0);

    el.replaceChildren();
    const fig = document.createElement("figure");
    fig.className = "chart";
    fig.dataset.series = String(series.length);
    fig.dataset.points = String(xs.length);
    fig.dataset.drawn = "0";
    const cap = document.createElement("figcaption");
    cap.id = "cap-" + Math.random().toString(36).slice(2);
    const top = names.map((n, i) => [n, totals[i]]).sort((a, b) => b[1] - a[1]).slice(0, 3);
    cap.textContent = `${opts.title}: ${fmt(total)} ${unit} in ${xs.length} ${ts.granularity} buckets, ` +
      `${series.length} series (low–high ${fmt(lo.reduce((a, b) => a + b, 0))}–${fmt(hi.reduce((a, b) => a + b, 0))}); ` +
      `largest: ${top.map(([n, v]) => `${n} ${fmt(v)}`).join(", ") || "none"}`;
    fig.appendChild(cap);
    const plot = document.createElement("div");
    plot.className = "plot";
    plot.setAttribute("role", "img");
    plot.setAttribute("aria-labelledby", cap.id);
    fig.appendChild(plot);
    fig.appendChild(table(names, xs, ys, lo, hi, ts.granularity, unit));
    el.appendChild(fig);

    if (typeof uPlot === "undefined") {
      plot.textContent = "The chart library is not installed (run `make`): the figures are in the table below.";
      return null;
    }
    // stacked: cumulative sums, drawn from the top layer down so each fill covers the one above it
    const cum = [];
    ys.forEach((y, i) => cum.push(y.map((v, j) => v + (i ? cum[i - 1][j] : 0))));
    const data = [xs];
    const sers = [{}];
    for (let i = ys.length - 1; i >= 0; i--) {
      const c = PALETTE[i % PALETTE.length];
      data.push(cum[i]);
      sers.push({ label: names[i], stroke: c, fill: c + "cc", width: 1, points: { show: false }, value: (u, v, si, di) => fmt(ys[i][di]) });
    }
    data.push(lo, hi);
    sers.push({ label: "total low", stroke: "#333", dash: [4, 4], width: 1, points: { show: false } });
    sers.push({ label: "total high", stroke: "#333", dash: [4, 4], width: 1, points: { show: false } });
    const width = () => Math.max(280, plot.clientWidth || el.clientWidth || 600);
    const u = new uPlot({
      width: width(),
      height: opts.height || 300,
      series: sers,
      axes: [{}, { label: unit, size: 60, values: (u, vals) => vals.map(fmt) }],
      legend: { live: true },
      hooks: {
        draw: [() => {
          fig.dataset.drawn = "1";
          if (window.__firstChartAt === undefined) window.__firstChartAt = performance.now();
        }],
      },
    }, data, plot);
    u.__fig = fig;
    live.add(u);
    return u;
  }

  function table(names, xs, ys, lo, hi, granularity, unit) {
    const d = document.createElement("details");
    const s = document.createElement("summary");
    s.textContent = "Chart data as a table";
    d.appendChild(s);
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    const t = document.createElement("table");
    const head = ["bucket", ...names, `total (${unit})`, "low", "high"];
    t.innerHTML = "<thead><tr></tr></thead><tbody></tbody>";
    head.forEach((h, i) => {
      const th = document.createElement("th");
      th.textContent = h;
      th.scope = "col";
      if (i) th.className = "num";
      t.tHead.rows[0].appendChild(th);
    });
    xs.forEach((x, j) => {
      const tr = t.tBodies[0].insertRow();
      const cells = [bucketLabel(x * 1000, granularity), ...ys.map((y) => fmt(y[j])),
        fmt(ys.reduce((a, y) => a + y[j], 0)), fmt(lo[j]), fmt(hi[j])];
      cells.forEach((c, i) => {
        const td = tr.insertCell();
        td.textContent = c;
        if (i) td.className = "num";
      });
    });
    wrap.appendChild(t);
    d.appendChild(wrap);
    return d;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
    if (a >= 1000) return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
    return Number(v.toPrecision(4)).toString();
  }

  function clear() {
    live.forEach((u) => u.destroy());
    live.clear();
  }

  window.addEventListener("resize", () => {
    live.forEach((u) => {
      const p = u.root.parentElement;
      if (p && p.clientWidth) u.setSize({ width: Math.max(280, p.clientWidth), height: u.height });
    });
  });

  return { stacked, clear, fmt, label, live };
})();
