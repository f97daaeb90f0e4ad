// The Altostratus console: hash-routed pages over the public HTTP API, no framework, no build step.
// The API key lives in this tab's sessionStorage and goes out as a Bearer token; nothing else is stored.
// This file holds what every page uses: the API call, element building, formatting, the router, sign-in.
"use strict";

const KEY = "alto.apiKey";
const view = document.getElementById("view");
const STATUSES = ["queued", "running", "succeeded", "failed", "dead_lettered", "cancelled"];
const TERMINAL = ["succeeded", "failed", "dead_lettered", "cancelled"];
let timers = [];
let me = null; // GET /v1/me: {tenant, operator, tenants}

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
  if (res.status === 401) { signOut(); throw new Error("signed out: the key is no longer accepted"); }
  if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
  return data;
}

// a query string from an object, leaving out empty values
const qs = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null && v !== false)).toString();

// every page of a listing, up to `most` jobs (for grouping and timelines, which need them all)
async function allPages(params, most) {
  const out = [];
  let cursor = null;
  do {
    const page = await api("GET", "/v1/jobs?" + qs({...params, limit: 200, cursor}));
    out.push(...page.jobs);
    cursor = page.next_cursor;
  } while (cursor && out.length < most);
  return {jobs: out.slice(0, most), more: !!cursor || out.length > most};
}

const ago = (t) => {
  if (!t) return "-";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ");
};
const until = (t) => {
  const s = t - Date.now() / 1000;
  return s <= 0 ? "now" : s < 90 ? `in ${Math.round(s)} s` : `in ${Math.round(s / 60)} min`;
};
const dur = (s) => s == null ? "-" : s < 1 ? `${Math.round(s * 1000)} ms` : s < 120 ? `${s.toFixed(1)} s` : `${(s / 60).toFixed(1)} min`;
const usd = (x) => "$" + (x || 0).toFixed(x >= 1 ? 2 : 5);
const badge = (s) => h("span", {class: "status " + s}, s.replace("_", " "));
const waitingNote = (j) => j.waiting ? h("span", {class: "waiting"}, `waiting: ${j.waiting.reason}; next try ${until(j.waiting.until)}`) : "";
let gen = 0; // which navigation is current: a page still loading after the user moved on must not draw
const show = (...els) => { view.replaceChildren(...els); };
const fail = (e) => show(h("p", {class: "error"}, "Error: " + e.message));
// what a page draws with: bound to the navigation that opened it, so a late answer is dropped
function pageShow() {
  const g = gen;
  const mine = (...els) => { if (g === gen) view.replaceChildren(...els); };
  return {show: mine, fail: (e) => mine(h("p", {class: "error"}, "Error: " + e.message))};
}
const every = (ms, fn) => { timers.push(setInterval(fn, ms)); };
const jobLink = (id) => h("a", {href: `#/jobs/${id}`}, id);

// the tenant an operator looks at ("" = every tenant); a tenant's key always looks at its own
function tenantPicker(onchange) {
  if (!me || !me.operator) return "";
  const pick = h("select", {id: "f-tenant"}, h("option", {value: ""}, "every tenant"),
    ...me.tenants.map((t) => h("option", {value: t}, t)));
  pick.value = sessionStorage.getItem("alto.tenant") || "";
  pick.addEventListener("change", () => { sessionStorage.setItem("alto.tenant", pick.value); onchange(); });
  return h("label", {}, "Tenant", pick);
}
const tenantParam = () => (me && me.operator && sessionStorage.getItem("alto.tenant")) || "";

function signOut() {
  sessionStorage.removeItem(KEY);
  me = null;
  location.hash = "#/signin";
}

function signin() {
  const input = h("input", {type: "password", id: "api-key", placeholder: "API key", autocomplete: "off", size: 40});
  const msg = h("p", {class: "error", id: "signin-error"});
  const form = h("form", {class: "inline", onsubmit: async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    const res = await fetch("/v1/me", {headers: {"Authorization": "Bearer " + key}}).catch((err) => err);
    if (res instanceof Response && res.ok) { sessionStorage.setItem(KEY, key); location.hash = "#/overview"; return; }
    const why = res instanceof Response ? ((await res.json().catch(() => ({}))).error || {}).message || res.statusText : res.message;
    msg.textContent = "That key was not accepted: " + why;
  }}, h("label", {}, "API key", input), h("button", {type: "submit", id: "signin"}, "Sign in"));
  show(h("h1", {}, "Sign in"), h("p", {class: "muted"}, "Your key stays in this tab and is sent only to this service."), form, msg);
}

// "#/jobs?status=failed" → ["jobs", undefined, {status: "failed"}]; "#/jobs/ID" → ["jobs", "ID", {}]
function parseHash() {
  const [path, query] = (location.hash || "#/overview").slice(2).split("?");
  const [page, id] = path.split("/");
  return [page || "overview", id, Object.fromEntries(new URLSearchParams(query || ""))];
}

async function route() {
  gen += 1;
  timers.forEach(clearInterval);
  timers = [];
  const signedIn = !!sessionStorage.getItem(KEY);
  for (const id of ["nav", "signout", "who"]) document.getElementById(id).hidden = !signedIn;
  const [page, id, params] = parseHash();
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${page}`);
  if (!signedIn || page === "signin") return signin();
  try {
    if (!me) me = await api("GET", "/v1/me");
  } catch (e) { return fail(e); }
  document.getElementById("who").textContent = me.operator ? "operator" : `tenant ${me.tenant}`;
  if (page === "jobs" && id) return job(id);
  const pages = {overview, jobs, dlq, costs, providers, submit};
  return (pages[page] || overview)(params);
}

document.getElementById("signout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
