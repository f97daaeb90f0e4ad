// Dead letters grouped by what killed them: the error class and its message with ids and numbers masked, so
// "429 ... retry after 12 s" and "... 30 s" are one group. Each group opens to its jobs; replay one or all.
"use strict";

const MOST_DEAD = 2000; // dead letters read for grouping

function errorKey(j) {
  if (!j.error) return "(no error recorded)";
  const msg = j.error.message.replace(/job_[0-9a-f]+(-s\d+r\d+n\d+)?/g, "JOB").replace(/\b[0-9a-f]{12,}\b/g, "…")
    .replace(/(?<!HTTP )\b\d+(\.\d+)?\b/g, "N"); // the status code stays: a 500 and a 529 are different troubles
  return `${j.error.error_class}: ${msg}`;
}

async function dlq() {
  const {show, fail} = pageShow();
  const tenant = tenantParam();
  let found;
  try {
    found = await allPages({status: "dead_lettered", tenant}, MOST_DEAD);
  } catch (e) { return fail(e); }
  const groups = new Map();
  for (const j of found.jobs) {
    const k = errorKey(j);
    if (!groups.has(k)) groups.set(k, []);
    groups.get(k).push(j);
  }
  const sorted = [...groups.entries()].sort((a, b) => b[1].length - a[1].length);
  const replay = async (ids, button) => {
    button.disabled = true;
    for (const id of ids) {
      try { await api("POST", `/v1/jobs/${id}/replay`); } catch (e) {
        button.after(h("span", {class: "error"}, ` ${id}: ${e.message}`));
      }
    }
    dlq();
  };
  const section = ([key, list], n) => {
    const tenants = [...new Set(list.map((j) => j.tenant))].join(", ");
    const all = h("button", {class: "replay-group", onclick: (e) => replay(list.filter((j) => !j.workflow).map((j) => j.job_id), e.target)},
      `Replay ${list.length}`);
    return h("details", {class: "group card", "data-group": n, ...(n === 0 ? {open: true} : {})},
      h("summary", {}, h("b", {class: "count"}, String(list.length)), h("span", {class: "error"}, key),
        h("span", {class: "muted"}, ` · last ${ago(Math.max(...list.map((j) => j.updated_at)))}` + (me.operator ? ` · ${tenants}` : ""))),
      h("p", {}, all),
      h("table", {}, h("thead", {}, h("tr", {}, ...["Job", "Tenant", "Task", "Calls", "When", ""].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...list.map((j) => h("tr", {}, h("td", {}, jobLink(j.job_id)), h("td", {}, j.tenant), h("td", {}, j.task || "-"),
          h("td", {class: "num"}, String(j.attempts.length)), h("td", {}, ago(j.updated_at)),
          h("td", {}, j.workflow ? h("span", {class: "muted"}, "replay with alto dlq replay") : h("button", {class: "replay secondary",
            onclick: (e) => replay([j.job_id], e.target)}, "Replay")))))));
  };
  show(h("h1", {}, "Dead letters"), h("div", {class: "filters"}, tenantPicker(dlq)),
    h("p", {class: "muted", id: "dlq-summary"}, found.jobs.length ? `${found.jobs.length}${found.more ? "+" : ""} dead letters in `
      + `${sorted.length} group(s) by error` : ""),
    h("div", {id: "dlq"}, ...(sorted.length ? sorted.map(section) : [h("p", {class: "muted"}, "No dead letters.")])));
}
