// The smaller pages: spend as a table (grouped as asked), providers' circuits and rate buckets, and a form to
// submit a job.
"use strict";

async function costs(params) {
  const {show, fail} = pageShow();
  const dims = me.operator ? ["tenant", "task", "model", "lane", "day"] : ["task", "model", "lane", "day"];
  const by = h("select", {id: "c-by"}, ...["day,model", "model", "task", "task,model", "lane", ...(me.operator ? ["tenant", "tenant,model"] : [])]
    .map((v) => h("option", {value: v}, v.replace(",", " and "))));
  by.value = params.by || "day,model";
  by.addEventListener("change", () => { location.hash = `#/costs?by=${by.value}`; });
  let report;
  try {
    report = await api("GET", "/v1/usage?" + qs({group_by: by.value, tenant: tenantParam()}));
  } catch (e) { return fail(e); }
  const cols = report.group_by.filter((d) => dims.includes(d));
  const total = (f) => report.rows.reduce((s, r) => s + (r[f] || 0), 0);
  const saved = (r) => (r.saved_prompt_cache_usd || 0) + (r.saved_response_cache_usd || 0) + (r.saved_batch_usd || 0);
  show(h("h1", {}, "Spend since ", report.since), h("div", {class: "filters"}, tenantPicker(() => costs(params)),
    h("label", {}, "Group by", by)),
    h("table", {id: "costs"}, h("thead", {}, h("tr", {}, ...[...cols, "Calls", "Input", "Output", "Cost", "Saved"]
      .map((t, i) => h("th", {class: i >= cols.length ? "num" : ""}, t)))),
      h("tbody", {}, ...report.rows.map((r) => h("tr", {}, ...cols.map((c) => h("td", {}, r[c])),
        h("td", {class: "num"}, String(r.calls)), h("td", {class: "num"}, String(r.input_tokens)),
        h("td", {class: "num"}, String(r.output_tokens)), h("td", {class: "num"}, usd(r.cost_usd)), h("td", {class: "num"}, usd(saved(r)))))),
      h("tfoot", {}, h("tr", {}, h("th", {colspan: cols.length}, "total"), h("th", {class: "num"}, String(total("calls"))),
        h("th", {class: "num"}, String(total("input_tokens"))), h("th", {class: "num"}, String(total("output_tokens"))),
        h("th", {class: "num"}, usd(total("cost_usd"))), h("th", {class: "num"}, usd(report.rows.reduce((s, r) => s + saved(r), 0)))))));
}

async function providers() {
  const {show, fail} = pageShow();
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
  const {show, fail} = pageShow();
  if (me.operator) return show(h("h1", {}, "Submit a job"), h("p", {class: "muted"}, "An operator's key submits no jobs: "
    + "sign in with a tenant's key to submit."));
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
    h("label", {}, "Task", task), h("label", {class: "check"}, stream, "stream")), h("button", {type: "submit", id: "s-submit"}, "Submit")), msg);
}
