// The jobs list: filters (status, task, text, created range, tenant for an operator) kept in the URL, pages
// through the API's cursor, and a workflow's steps folded under it (they open in place).
"use strict";

const RANGES = {"": "any time", "3600": "last hour", "86400": "last day", "604800": "last 7 days", "2592000": "last 30 days"};

async function jobs(params) {
  const {show, fail} = pageShow();
  const f = {status: params.status || "", task: params.task || "", q: params.q || "", range: params.range || "",
             steps: params.steps === "1", size: params.size || "50"};
  const status = h("select", {id: "f-status"}, h("option", {value: ""}, "any status"),
    ...STATUSES.map((s) => h("option", {value: s}, s.replace("_", " "))));
  const task = h("input", {id: "f-task", placeholder: "task", value: f.task, size: 12});
  const text = h("input", {id: "f-q", placeholder: "id, prompt, model, error…", value: f.q, size: 26});
  const range = h("select", {id: "f-range"}, ...Object.entries(RANGES).map(([v, t]) => h("option", {value: v}, t)));
  const size = h("select", {id: "f-size"}, ...["25", "50", "100"].map((n) => h("option", {value: n}, n)));
  const steps = h("input", {type: "checkbox", id: "f-steps", checked: f.steps});
  const live = h("input", {type: "checkbox", id: "f-live", checked: true});
  status.value = f.status; range.value = f.range; size.value = f.size;
  const body = h("tbody"), info = h("span", {class: "muted", id: "page-info"});
  const newer = h("button", {class: "secondary", id: "newer", disabled: true}, "← Newer");
  const older = h("button", {class: "secondary", id: "older", disabled: true}, "Older →");
  const cursors = [null]; // the cursor of each page shown so far: back is a pop
  const operator = me && me.operator;

  function keep() { // the filters in the URL, so a view can be shared and survives a reload
    const p = qs({status: status.value, task: task.value.trim(), q: text.value.trim(), range: range.value,
                  steps: steps.checked ? "1" : "", size: size.value === "50" ? "" : size.value});
    history.replaceState(null, "", "#/jobs" + (p ? "?" + p : ""));
  }
  async function load() {
    const since = range.value ? Date.now() / 1000 - Number(range.value) : "";
    const cursor = cursors[cursors.length - 1];
    try {
      const page = await api("GET", "/v1/jobs?" + qs({limit: size.value, status: status.value, task: task.value.trim(),
        q: text.value.trim(), since, top_level: steps.checked ? "" : "true", tenant: tenantParam(), cursor}));
      body.replaceChildren(...page.jobs.flatMap((j) => row(j, operator)));
      if (!page.jobs.length) body.append(h("tr", {}, h("td", {colspan: 9, class: "muted"},
        page.next_cursor ? "None in this stretch; older pages may have some." : "No jobs match.")));
      older.disabled = !page.next_cursor;
      older.onclick = () => { cursors.push(page.next_cursor); load(); };
      newer.disabled = cursors.length === 1;
      info.textContent = `page ${cursors.length}`;
    } catch (e) { body.replaceChildren(h("tr", {}, h("td", {colspan: 9, class: "error"}, e.message))); }
  }
  newer.onclick = () => { cursors.pop(); load(); };
  const again = () => { cursors.length = 1; keep(); load(); };
  for (const el of [status, range, size, steps]) el.addEventListener("change", again);
  let typing = null;
  for (const el of [task, text]) el.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(again, 300); });
  show(h("h1", {}, "Jobs"),
    h("div", {class: "filters"}, tenantPicker(again), h("label", {}, "Status", status), h("label", {}, "Task", task),
      h("label", {}, "Search", text), h("label", {}, "Created", range), h("label", {}, "Per page", size),
      h("label", {class: "check"}, steps, "workflow steps too"), h("label", {class: "check"}, live, "live")),
    h("table", {id: "jobs"}, h("thead", {}, h("tr", {}, ...["Job", "Status", ...(operator ? ["Tenant"] : []), "Task",
      "Model", "Created", "Calls", "Cost", "Workflow"].map((t) => h("th", {class: ["Calls", "Cost"].includes(t) ? "num" : ""}, t)))),
    body), h("div", {class: "pager"}, newer, older, info));
  await load();
  every(3000, () => { if (live.checked && cursors.length === 1) load(); }); // only the newest page moves
}

function row(j, operator, child) {
  const cells = [h("td", {}, jobLink(j.job_id)), h("td", {}, badge(j.status), waitingNote(j)),
    ...(operator ? [h("td", {}, j.tenant)] : []), h("td", {}, j.task || "-"), h("td", {}, (j.route && j.route.model) || "-"),
    h("td", {}, ago(j.created_at)), h("td", {class: "num"}, String(j.usage.calls || j.attempts.length)),
    h("td", {class: "num"}, usd(j.usage.cost_usd)), h("td", {}, workflowCell(j, operator))];
  return [h("tr", {class: child ? "child" : "", "data-job": j.job_id}, ...cells)];
}

function workflowCell(j, operator) {
  if (j.parent_id) return h("span", {class: "muted"}, "step of ", jobLink(j.parent_id));
  if (!j.steps) return "-";
  const total = j.steps.reduce((n, s) => n + s.children.total, 0);
  const open = h("button", {class: "link expand", "data-parent": j.job_id}, `▸ ${total} steps`);
  open.onclick = async () => { // the children, in step order, right under their parent
    const tr = open.closest("tr");
    if (open.dataset.open) {
      document.querySelectorAll(`tr[data-child-of="${j.job_id}"]`).forEach((r) => r.remove());
      delete open.dataset.open; open.textContent = `▸ ${total} steps`; return;
    }
    open.dataset.open = "1"; open.textContent = `▾ ${total} steps`;
    const kids = await api("GET", "/v1/jobs?" + qs({parent: j.job_id, limit: 200}));
    const rows = kids.jobs.flatMap((k) => row(k, operator, true));
    rows.forEach((r) => r.setAttribute("data-child-of", j.job_id));
    if (kids.next_cursor) rows.push(h("tr", {class: "child", "data-child-of": j.job_id}, h("td", {colspan: 9},
      h("a", {href: `#/jobs/${j.job_id}`}, "every step on the workflow's page"))));
    tr.after(...rows);
  };
  return h("span", {}, j.workflow, " ", open);
}
