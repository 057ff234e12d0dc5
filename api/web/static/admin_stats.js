// The admin stats page: per-day figures (`GET /api/admin/stats/`) as tables and bar charts
// drawn as inline SVG here (no library), and token usage (`GET /api/admin/usage/`) with
// filters and paging. Every name and id goes in as text.
"use strict";

(function () {
  const { api, el, showError } = window.Parley;
  const byId = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const DAY_MS = 86400000;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const isoDay = (d) => d.toISOString().slice(0, 10);

  // Every UTC day from `from` to `to` (YYYY-MM-DD), both included.
  function daysBetween(from, to) {
    const days = [];
    const end = Date.parse(to + "T00:00:00Z");
    for (let t = Date.parse(from + "T00:00:00Z"); t <= end && days.length < 1000; t += DAY_MS) {
      days.push(isoDay(new Date(t)));
    }
    return days;
  }

  const compact = (n) => n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e4 ? Math.round(n / 1e3) + "k" : String(n);

  // A bar chart of `points` ({label, values: [one per series]}), the series stacked, into
  // `figure` (after its caption). The table beside it carries the same figures.
  function barChart(figure, points, series, unit) {
    figure.querySelector("svg")?.remove();
    const W = 400, H = 180, left = 34, bottom = 22, top = 8;
    const plotW = W - left - 4, plotH = H - top - bottom;
    const totals = points.map((p) => p.values.reduce((a, b) => a + b, 0));
    const max = Math.max(1, ...totals);
    const caption = figure.querySelector("figcaption").textContent;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "bars", role: "img",
      "aria-label": caption + ": " + points.length + " days, highest " + Math.max(0, ...totals) + " " + unit });
    chart.append(svg("line", { x1: left, y1: top + plotH, x2: W - 4, y2: top + plotH, class: "axis" }));
    chart.append(svg("text", { x: left - 4, y: top + 10, "text-anchor": "end", class: "tick" }, compact(max)));
    chart.append(svg("text", { x: left - 4, y: top + plotH, "text-anchor": "end", class: "tick" }, "0"));
    const step = plotW / Math.max(1, points.length);
    const barW = Math.max(1, step * 0.8);
    points.forEach((p, i) => {
      const x = left + i * step + (step - barW) / 2;
      let y = top + plotH;
      const g = svg("g", { class: "bar" });
      g.dataset.day = p.label;
      g.append(svg("title", {}, p.label + ": " + series.map((s, j) => p.values[j] + " " + s.name).join(", ")));
      p.values.forEach((v, j) => {
        const h = (v / max) * plotH;
        y -= h;
        g.append(svg("rect", { x: x.toFixed(2), y: y.toFixed(2), width: barW.toFixed(2), height: h.toFixed(2),
          class: series[j].cls }));
      });
      chart.append(g);
    });
    // The first and last days under the axis.
    if (points.length) {
      chart.append(svg("text", { x: left, y: H - 6, class: "tick" }, points[0].label));
      if (points.length > 1) {
        chart.append(svg("text", { x: W - 4, y: H - 6, "text-anchor": "end", class: "tick" },
          points[points.length - 1].label));
      }
    }
    if (series.length > 1) {
      const legend = el("p", { class: "legend" });
      legend.append(...series.map((s) => el("span", { class: "key " + s.cls, text: s.name })));
      figure.querySelector(".legend")?.remove();
      figure.append(legend);
    }
    figure.append(chart);
  }

  async function loadStats() {
    const from = byId("s-from").value, to = byId("s-to").value;
    try {
      const stats = await api("GET", "/api/admin/stats/?from=" + encodeURIComponent(from) + "&to=" + encodeURIComponent(to));
      const byDay = new Map(stats.days.map((d) => [d.day, d]));
      const tokens = (d, key) => (d ? d.tokens.reduce((a, t) => a + t[key], 0) : 0);
      const days = daysBetween(from, to);
      barChart(byId("messages-chart"), days.map((day) => ({ label: day, values: [byDay.get(day)?.messages || 0] })),
        [{ name: "messages", cls: "s1" }], "messages");
      barChart(byId("tokens-chart"), days.map((day) => {
        const d = byDay.get(day);
        return { label: day, values: [tokens(d, "prompt_tokens"), tokens(d, "completion_tokens")] };
      }), [{ name: "prompt", cls: "s1" }, { name: "completion", cls: "s2" }], "tokens");

      const body = byId("days-body");
      body.replaceChildren();
      const jobs = new Map();
      for (const d of stats.days) {
        const ended = d.jobs.reduce((a, j) => a + j.count, 0);
        body.append(el("tr", {}, [el("th", { scope: "row", text: d.day }), el("td", { text: String(d.new_accounts) }),
          el("td", { text: String(d.active_users) }), el("td", { text: String(d.sessions) }),
          el("td", { text: String(d.messages) }),
          el("td", { text: String(tokens(d, "prompt_tokens") + tokens(d, "completion_tokens")) }),
          el("td", { text: String(ended) })]));
        for (const j of d.jobs) {
          const key = j.kind + " " + j.status;
          const sum = jobs.get(key) || { kind: j.kind, status: j.status, count: 0, p50: 0, p95: 0 };
          sum.count += j.count;
          sum.p50 = Math.max(sum.p50, j.p50_ms);
          sum.p95 = Math.max(sum.p95, j.p95_ms);
          jobs.set(key, sum);
        }
      }
      byId("days-empty").textContent = stats.days.length ? "" : "No activity in this range.";
      const jbody = byId("jobs-body");
      jbody.replaceChildren();
      for (const j of [...jobs.values()].sort((a, b) => (a.kind + a.status).localeCompare(b.kind + b.status))) {
        jbody.append(el("tr", {}, [el("th", { scope: "row", text: j.kind }), el("td", { text: j.status }),
          el("td", { text: String(j.count) }), el("td", { text: "≤ " + j.p50 + " ms" }),
          el("td", { text: "≤ " + j.p95 + " ms" })]));
      }
      byId("waiting-now").textContent = stats.queue_depth.length
        ? stats.queue_depth.map((q) => q.queue + " " + q.waiting).join(", ") : "nothing";
    } catch (err) { showError(err); }
  }

  // ---- usage, a page at a time
  let usageCursor = null;
  const emails = new Map();
  async function loadUsage(more) {
    let q = "?limit=100&from=" + encodeURIComponent(byId("s-from").value) + "&to=" + encodeURIComponent(byId("s-to").value);
    const add = (k, v) => { if (v) q += "&" + k + "=" + encodeURIComponent(v); };
    add("group_by", byId("u-group").value);
    add("user_id", byId("u-user").value.trim());
    add("model", byId("u-model").value.trim());
    if (more && usageCursor) add("cursor", usageCursor);
    try {
      const page = await api("GET", "/api/admin/usage/" + q);
      // Accounts by email where a handful are new on this page; the id otherwise.
      const unknown = [...new Set(page.items.map((r) => r.user_id))].filter((id) => !emails.has(id)).slice(0, 20);
      await Promise.all(unknown.map(async (id) => {
        try { emails.set(id, (await api("GET", "/api/admin/users/" + encodeURIComponent(id) + "/")).email); }
        catch (_) { emails.set(id, id); }
      }));
      const body = byId("usage-body");
      if (!more) body.replaceChildren();
      for (const r of page.items) {
        body.append(el("tr", {}, [el("td", { text: r.period }), el("td", { text: emails.get(r.user_id) || r.user_id }),
          el("td", { text: r.model }), el("td", { text: r.kind }), el("td", { text: String(r.prompt_tokens) }),
          el("td", { text: String(r.completion_tokens) }), el("td", { text: String(r.total_tokens) }),
          el("td", { text: String(r.requests) })]));
      }
      usageCursor = page.next_cursor;
      byId("usage-more").hidden = !usageCursor;
    } catch (err) { showError(err); }
  }

  function reload() {
    showError(null);
    loadStats();
    loadUsage(false);
  }

  const today = new Date();
  byId("s-to").value = isoDay(today);
  byId("s-from").value = isoDay(new Date(today.getTime() - 29 * DAY_MS));
  byId("stats-range").addEventListener("submit", (e) => { e.preventDefault(); reload(); });
  byId("usage-filter").addEventListener("submit", (e) => { e.preventDefault(); showError(null); loadUsage(false); });
  byId("usage-more").addEventListener("click", () => loadUsage(true));
  reload();
})();
