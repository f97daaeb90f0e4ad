// The overview a team looks at daily, from the usage ledger (/v1/usage) and the outcome ledger (/v1/outcomes):
// spend and tokens per day by model and task, jobs by status, latency percentiles, and what caching and the
// batch lane saved. Charts by Chart.js (vendored); every number also in the page's text for screen readers.
"use strict";

const COLOURS = ["#2f6fde", "#17804a", "#b7791f", "#8e44ad", "#c0362c", "#16a2b8", "#6b7280", "#d97706"];
const STATUS_COLOURS = {succeeded: "#17804a", failed: "#c0362c", dead_lettered: "#7f1d1d", cancelled: "#98a2b3"};
let charts = [];

function dayList(days) {
  const out = [];
  for (let i = days - 1; i >= 0; i--) out.push(new Date(Date.now() - i * 86400000).toISOString().slice(0, 10));
  return out;
}

// rows grouped by (day, dim) → one dataset per value of dim, a value per day
function series(rows, days, dim, field, colours) {
  const names = [...new Set(rows.map((r) => r[dim]))].sort();
  return names.map((name, k) => ({
    label: name, stack: "s", backgroundColor: (colours && colours[name]) || COLOURS[k % COLOURS.length],
    data: days.map((d) => rows.filter((r) => r.day === d && r[dim] === name).reduce((s, r) => s + (r[field] || 0), 0)),
  }));
}

function chart(id, title, type, labels, datasets, yTitle) {
  const canvas = h("canvas", {id, role: "img", "aria-label": title});
  const box = h("div", {class: "chart"}, h("h2", {}, title), canvas);
  if (typeof Chart === "undefined") { box.append(h("p", {class: "muted"}, "Chart.js did not load.")); return box; }
  charts.push(new Chart(canvas, {type, data: {labels, datasets}, options: {
    animation: false, maintainAspectRatio: false, interaction: {mode: "index", intersect: false},
    scales: {x: {stacked: type === "bar"}, y: {stacked: type === "bar", beginAtZero: true, title: {display: !!yTitle, text: yTitle}}},
    plugins: {legend: {position: "bottom", labels: {boxWidth: 10}}}}}));
  return box;
}

async function overview(params) {
  const {show, fail} = pageShow();
  const range = h("select", {id: "o-range"}, ...[["7", "7 days"], ["30", "30 days"], ["90", "90 days"]].map(([v, t]) => h("option", {value: v}, t)));
  range.value = params.days || "30";
  range.addEventListener("change", () => { location.hash = `#/overview?days=${range.value}`; });
  const days = dayList(Number(range.value)), since = days[0], tenant = tenantParam();
  let spend, tokens, ended, latency, savings;
  try {
    [spend, tokens, ended, latency, savings] = await Promise.all([
      api("GET", "/v1/usage?" + qs({group_by: "day,model", since, tenant})),
      api("GET", "/v1/usage?" + qs({group_by: "day,task", since, tenant})),
      api("GET", "/v1/outcomes?" + qs({group_by: "day,status", since, tenant})),
      api("GET", "/v1/outcomes?" + qs({group_by: "day", since, tenant})),
      api("GET", "/v1/usage?" + qs({group_by: "day", since, tenant}))]);
  } catch (e) { return fail(e); }
  charts.forEach((c) => c.destroy());
  charts = [];
  const sum = (rows, f) => rows.reduce((s, r) => s + (r[f] || 0), 0);
  const jobsTotal = sum(ended.rows, "jobs"), ok = sum(ended.rows.filter((r) => r.status === "succeeded"), "jobs");
  const saved = sum(savings.rows, "saved_prompt_cache_usd") + sum(savings.rows, "saved_response_cache_usd") + sum(savings.rows, "saved_batch_usd");
  const tokenRows = tokens.rows.map((r) => ({...r, tokens: r.input_tokens + r.output_tokens}));
  const byDay = (rows, f) => days.map((d) => (rows.find((r) => r.day === d) || {})[f] ?? null);
  const saving = (f, label, colour) => ({label, stack: "s", backgroundColor: colour, data: byDay(savings.rows, f).map((v) => v || 0)});
  const line = (f, label, colour) => ({label, data: byDay(latency.rows, f), borderColor: colour, backgroundColor: colour,
    spanGaps: true, tension: 0.2});
  const labels = days.map((d) => d.slice(5));
  show(h("h1", {}, "Overview"), h("div", {class: "filters"}, tenantPicker(() => overview(params)), h("label", {}, "Period", range)),
    h("div", {class: "tiles", id: "tiles"},
      h("div", {class: "tile"}, h("b", {id: "t-spend"}, usd(sum(spend.rows, "cost_usd"))), h("span", {}, "spent")),
      h("div", {class: "tile"}, h("b", {id: "t-calls"}, String(sum(spend.rows, "calls"))), h("span", {}, "provider calls")),
      h("div", {class: "tile"}, h("b", {id: "t-jobs"}, String(jobsTotal)), h("span", {}, "jobs ended")),
      h("div", {class: "tile"}, h("b", {id: "t-ok"}, jobsTotal ? `${(100 * ok / jobsTotal).toFixed(1)}%` : "-"), h("span", {}, "succeeded")),
      h("div", {class: "tile"}, h("b", {id: "t-saved"}, usd(saved)), h("span", {}, "saved by caches and batches"))),
    h("div", {class: "charts"},
      chart("c-spend", "Spend per day by model ($)", "bar", labels, series(spend.rows, days, "model", "cost_usd")),
      chart("c-tokens", "Tokens per day by task", "bar", labels, series(tokenRows, days, "task", "tokens")),
      chart("c-status", "Jobs ended per day by status", "bar", labels, series(ended.rows, days, "status", "jobs", STATUS_COLOURS)),
      chart("c-latency", "Submit-to-end latency (s)", "line", labels, [line("p50_latency_s", "p50", "#2f6fde"),
        line("p90_latency_s", "p90", "#b7791f"), line("p99_latency_s", "p99", "#c0362c")], "seconds"),
      chart("c-savings", "Saved per day ($)", "bar", labels, [saving("saved_prompt_cache_usd", "prompt cache", "#2f6fde"),
        saving("saved_response_cache_usd", "response cache", "#17804a"), saving("saved_batch_usd", "batch lane", "#b7791f")])));
}
