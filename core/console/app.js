// The Altostratus console: a hash-routed page over the public HTTP API, no framework, no build step.
// The API key lives in this tab's sessionStorage and goes out as a Bearer token; nothing else is stored.
"use strict";

const KEY = "alto.apiKey";
const view = document.getElementById("view");
let timer = null;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return el;
}

async function api(method, path, body) {
  const res = await fetch(path, {method, headers: {"Authorization": "Bearer " + sessionStorage.getItem(KEY),
    ...(body ? {"Content-Type": "application/json"} : {})}, body: body ? JSON.stringify(body) : undefined});
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) { sessionStorage.removeItem(KEY); location.hash = "#/signin"; throw new Error("signed out"); }
  if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
  return data;
}

const ago = (t) => {
  if (!t) return "-";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ");
};
const usd = (x) => "$" + (x || 0).toFixed(x >= 1 ? 2 : 5);
const badge = (s) => h("span", {class: "status " + s}, s.replace("_", " "));
const show = (...els) => { view.replaceChildren(...els); };
const fail = (e) => show(h("p", {class: "error"}, "Error: " + e.message));

function signin() {
  const input = h("input", {type: "password", id: "api-key", placeholder: "API key", autocomplete: "off", size: 40});
  const msg = h("p", {class: "error", id: "signin-error"});
  const form = h("form", {class: "inline", onsubmit: async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    const res = await fetch("/v1/jobs?limit=1", {headers: {"Authorization": "Bearer " + key}}).catch((err) => err);
    if (res instanceof Response && res.ok) { sessionStorage.setItem(KEY, key); location.hash = "#/jobs"; route(); return; }
    const why = res instanceof Response ? ((await res.json().catch(() => ({}))).error || {}).message || res.statusText : res.message;
    msg.textContent = "That key was not accepted: " + why;
  }}, h("label", {}, "API key", input), h("button", {type: "submit", id: "signin"}, "Sign in"));
  show(h("h1", {}, "Sign in"), h("p", {class: "muted"}, "Your key stays in this tab and is sent only to this service."), form, msg);
}

async function jobs() {
  const status = h("select", {id: "f-status"}, h("option", {value: ""}, "any status"),
    ...["queued", "running", "succeeded", "failed", "dead_lettered", "cancelled"].map((s) => h("option", {value: s}, s)));
  const task = h("input", {id: "f-task", placeholder: "task"}), model = h("input", {id: "f-model", placeholder: "model"});
  const since = h("select", {id: "f-since"}, h("option", {value: "0"}, "any time"), h("option", {value: "3600"}, "last hour"),
    h("option", {value: "86400"}, "last day"));
  const live = h("input", {type: "checkbox", id: "f-live", checked: true});
  const body = h("tbody");
  async function load() {
    try {
      const q = status.value ? `&status=${status.value}` : "";
      const list = (await api("GET", `/v1/jobs?limit=100${q}`)).jobs;
      const cutoff = Number(since.value) ? Date.now() / 1000 - Number(since.value) : 0;
      const rows = list.filter((j) => (!task.value || (j.task || "").includes(task.value))
        && (!model.value || ((j.route && j.route.model) || "").includes(model.value)) && j.created_at >= cutoff);
      body.replaceChildren(...rows.map((j) => h("tr", {},
        h("td", {}, h("a", {href: `#/jobs/${j.job_id}`}, j.job_id)), h("td", {}, badge(j.status)),
        h("td", {}, j.task || "-"), h("td", {}, (j.route && j.route.model) || "-"), h("td", {}, ago(j.created_at)),
        h("td", {class: "num"}, String(j.attempts.length)), h("td", {class: "num"}, usd(j.usage.cost_usd)))));
      if (!rows.length) body.append(h("tr", {}, h("td", {colspan: 7, class: "muted"}, "No jobs match.")));
    } catch (e) { body.replaceChildren(h("tr", {}, h("td", {colspan: 7, class: "error"}, e.message))); }
  }
  for (const el of [status, task, model, since]) el.addEventListener("change", load);
  task.addEventListener("input", load); model.addEventListener("input", load);
  show(h("h1", {}, "Jobs"), h("div", {class: "filters"}, h("label", {}, "Status", status), h("label", {}, "Task", task),
    h("label", {}, "Model", model), h("label", {}, "Created", since), h("label", {}, "Live", live)),
    h("table", {id: "jobs"}, h("thead", {}, h("tr", {}, ...["Job", "Status", "Task", "Model", "Created", "Attempts", "Cost"]
      .map((t, i) => h("th", {class: i > 4 ? "num" : ""}, t)))), body));
  await load();
  timer = setInterval(() => { if (live.checked) load(); }, 2000);
}

function assembly(p) {
  if (!p) return h("p", {class: "muted"}, "Not assembled yet.");
  const parts = [["system", p.system_tokens], ["template", p.template_tokens], ["question", p.question_tokens],
    ["context", p.context_tokens], ["reserved output", p.reserved_output_tokens], ["margin", p.margin_tokens]];
  return h("div", {},
    h("p", {}, `${p.template} on ${p.model} (${p.tokenizer}), window ${p.window}, context budget ${p.context_budget}, `
      + `input ${p.input_tokens} tokens`),
    h("table", {}, h("tbody", {}, ...parts.map(([n, t]) => h("tr", {}, h("td", {}, n), h("td", {class: "num"}, String(t)))))),
    h("h2", {}, `Chunks used (${p.chunks.length}) and dropped (${p.dropped.length})`),
    h("ul", {}, ...p.chunks.map((c) => h("li", {}, `${c.id}: ${c.tokens} tokens, score ${c.score.toFixed(3)}`)),
      ...p.dropped.map((c) => h("li", {class: "muted"}, `${c.id}: dropped (${c.reason})`))));
}

function attempts(list) {
  if (!list.length) return h("p", {class: "muted"}, "No provider call yet.");
  return h("ol", {class: "timeline"}, ...list.map((a, i) => h("li", {},
    `${a.model} via ${a.provider}: ${a.outcome}`, a.error_class ? ` (${a.error_class}${a.status_code ? " " + a.status_code : ""})` : "",
    a.latency_ms != null ? `, ${Math.round(a.latency_ms)} ms` : "", i && list[i - 1].model !== a.model ? " (fallback)" : "",
    a.usage ? `, ${a.usage.input_tokens} in / ${a.usage.output_tokens} out, ${usd(a.usage.cost_usd)}` : "")));
}

async function job(id) {
  let seq = null;
  async function render() {
    const q = seq ? `?after=${seq}&wait_s=10` : "";
    const j = await api("GET", `/v1/jobs/${id}${q}`);
    const terminal = ["succeeded", "failed", "dead_lettered", "cancelled"].includes(j.status);
    const actions = h("p", {});
    if (!terminal) actions.append(h("button", {class: "secondary", id: "cancel", onclick: async () => {
      await api("DELETE", `/v1/jobs/${id}`).catch(fail); }}, "Cancel"));
    if (["failed", "dead_lettered", "cancelled"].includes(j.status)) actions.append(h("button", {id: "replay", onclick: async () => {
      await api("POST", `/v1/jobs/${id}/replay`).then(() => job(id)).catch(fail); }}, "Replay"));
    const answer = j.result ?? (j.partial ? j.partial.text : null);
    show(h("h1", {}, "Job ", h("code", {}, id), " ", badge(j.status)), actions,
      h("div", {class: "card"}, h("h2", {}, j.result != null ? "Answer" : j.partial ? "Partial output (streaming)" : "Answer"),
        h("div", {class: "answer", id: "answer"}, answer ?? (j.error ? "" : "Waiting for the model…")),
        j.error ? h("p", {class: "error", id: "job-error"}, `${j.error.error_class}: ${j.error.message}`) : ""),
      h("h2", {}, "Citations"), j.citations.length ? h("ul", {}, ...j.citations.map((c) => h("li", {}, `[${c.id}] ${c.source}`)))
        : h("p", {class: "muted"}, "None."),
      h("h2", {}, "Prompt assembly"), assembly(j.prompt),
      h("h2", {}, "Attempts"), attempts(j.attempts),
      h("h2", {}, "Usage"), h("p", {id: "usage"}, `${j.usage.input_tokens} input and ${j.usage.output_tokens} output tokens, `
        + `${usd(j.usage.cost_usd)}; created ${ago(j.created_at)}${j.finished_at ? ", finished " + ago(j.finished_at) : ""}`));
    if (j.partial) seq = `${j.partial.attempt}:${j.partial.seq}`;
    return terminal;
  }
  try {
    if (!(await render())) timer = setInterval(async () => { if (await render().catch(() => true)) clearInterval(timer); }, 1000);
  } catch (e) { fail(e); }
}

async function dlq() {
  try {
    const list = (await api("GET", "/v1/jobs?status=dead_lettered&limit=100")).jobs;
    const rows = list.map((j) => h("tr", {}, h("td", {}, h("a", {href: `#/jobs/${j.job_id}`}, j.job_id)),
      h("td", {}, j.error ? `${j.error.error_class}: ${j.error.message}` : "-"), h("td", {class: "num"}, String(j.attempts.length)),
      h("td", {}, ago(j.updated_at)), h("td", {}, h("button", {class: "replay", onclick: async () => {
        await api("POST", `/v1/jobs/${j.job_id}/replay`).then(dlq).catch(fail); }}, "Replay"))));
    show(h("h1", {}, "Dead letters"), h("table", {id: "dlq"}, h("thead", {}, h("tr", {},
      ...["Job", "Last error", "Attempts", "When", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", {colspan: 5, class: "muted"}, "No dead letters.")))));
  } catch (e) { fail(e); }
}

async function costs() {
  try {
    const rows = (await api("GET", "/v1/usage?group_by=day,model")).rows;
    const days = [...new Set(rows.map((r) => r.day))].sort(), models = [...new Set(rows.map((r) => r.model))].sort();
    const colours = ["#2f6fde", "#17804a", "#b7791f", "#8e44ad", "#c0362c", "#16a2b8"];
    const totals = days.map((d) => rows.filter((r) => r.day === d).reduce((s, r) => s + r.cost_usd, 0));
    const top = Math.max(...totals, 1e-9), W = 720, H = 220, bw = Math.min(48, Math.max(8, Math.floor((W - 60) / Math.max(days.length, 1)) - 6));
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H + 30}`); svg.setAttribute("width", W); svg.setAttribute("class", "chart");
    days.forEach((d, i) => {
      let y = H;
      models.forEach((m, k) => {
        const r = rows.find((x) => x.day === d && x.model === m);
        if (!r || !r.cost_usd) return;
        const hgt = (r.cost_usd / top) * (H - 20);
        const rect = document.createElementNS(svg.namespaceURI, "rect");
        Object.entries({x: 50 + i * (bw + 6), y: y - hgt, width: bw, height: hgt, fill: colours[k % colours.length]})
          .forEach(([a, v]) => rect.setAttribute(a, v));
        const title = document.createElementNS(svg.namespaceURI, "title"); title.textContent = `${d} ${m}: ${usd(r.cost_usd)}`;
        rect.append(title); svg.append(rect); y -= hgt;
      });
      const label = document.createElementNS(svg.namespaceURI, "text");
      Object.entries({x: 50 + i * (bw + 6), y: H + 16, "font-size": 10}).forEach(([a, v]) => label.setAttribute(a, v));
      label.textContent = d.slice(5); svg.append(label);
    });
    const scale = document.createElementNS(svg.namespaceURI, "text");
    Object.entries({x: 4, y: 24, "font-size": 10}).forEach(([a, v]) => scale.setAttribute(a, v));
    scale.textContent = usd(top); svg.append(scale);
    show(h("h1", {}, "Spend per day and model"), svg,
      h("p", {class: "legend"}, ...models.map((m, k) => h("span", {}, h("i", {style: `background:${colours[k % colours.length]}`}), m))),
      h("table", {id: "costs"}, h("thead", {}, h("tr", {}, ...["Day", "Model", "Calls", "Input", "Output", "Cost"]
        .map((t, i) => h("th", {class: i > 1 ? "num" : ""}, t)))), h("tbody", {}, ...rows.map((r) => h("tr", {},
        h("td", {}, r.day), h("td", {}, r.model), h("td", {class: "num"}, String(r.calls)), h("td", {class: "num"}, String(r.input_tokens)),
        h("td", {class: "num"}, String(r.output_tokens)), h("td", {class: "num"}, usd(r.cost_usd)))))));
  } catch (e) { fail(e); }
}

async function providers() {
  try {
    const models = (await api("GET", "/v1/providers")).models;
    show(h("h1", {}, "Providers: circuits and rate buckets"), h("table", {id: "providers"}, h("thead", {}, h("tr", {},
      ...["Model", "Provider", "Circuit", "Failures", "Rate available / capacity", "Slots in use"].map((t) => h("th", {}, t)))),
      h("tbody", {}, ...models.map((m) => h("tr", {}, h("td", {}, m.model), h("td", {}, `${m.provider} (${m.model_id})`),
        h("td", {}, m.circuit.state), h("td", {class: "num"}, String(m.circuit.failures || 0)),
        h("td", {}, m.rate.available ? Object.keys(m.rate.available).map((k) => `${k} ${m.rate.available[k]} / ${m.rate.capacity[k]}`)
          .join(", ") : "no limits"), h("td", {class: "num"}, String(m.rate.slots_in_use)))))));
  } catch (e) { fail(e); }
}

function submit() {
  const prompt = h("textarea", {id: "s-prompt", required: true, placeholder: "Ask a question"});
  const collection = h("input", {id: "s-collection", placeholder: "collection (optional)"});
  const task = h("input", {id: "s-task", placeholder: "task (optional)"});
  const stream = h("input", {type: "checkbox", id: "s-stream"}), msg = h("p", {class: "error"});
  show(h("h1", {}, "Submit a job"), h("form", {onsubmit: async (e) => {
    e.preventDefault();
    const body = {prompt: prompt.value, stream: stream.checked};
    if (collection.value) body.collection = collection.value;
    if (task.value) body.task = task.value;
    try { location.hash = `#/jobs/${(await api("POST", "/v1/jobs", body)).job_id}`; } catch (err) { msg.textContent = err.message; }
  }}, h("label", {}, "Prompt", prompt), h("div", {class: "filters"}, h("label", {}, "Collection", collection),
    h("label", {}, "Task", task), h("label", {}, "Stream", stream)), h("button", {type: "submit", id: "s-submit"}, "Submit")), msg);
}

function route() {
  clearInterval(timer);
  const signedIn = !!sessionStorage.getItem(KEY);
  document.getElementById("nav").hidden = !signedIn;
  const [, page, id] = (location.hash || "#/jobs").split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${page}`);
  if (!signedIn || page === "signin") return signin();
  if (page === "jobs" && id) return job(id);
  return ({jobs, dlq, costs, providers, submit}[page] || jobs)();
}

document.getElementById("signout").addEventListener("click", () => { sessionStorage.removeItem(KEY); location.hash = "#/signin"; });
window.addEventListener("hashchange", route);
route();
