// One job: its answer (streamed while it runs), citations, prompt assembly and attempts; a workflow: its
// steps and every child as a timeline (status, duration, calls, cost), each child a link; cancel and replay.
"use strict";

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

function actions(j, id) {
  const p = h("p", {});
  if (!TERMINAL.includes(j.status)) p.append(h("button", {class: "secondary", id: "cancel", onclick: async () => {
    await api("DELETE", `/v1/jobs/${id}`).then(() => job(id)).catch(fail); }}, "Cancel"));
  if (["failed", "dead_lettered", "cancelled"].includes(j.status) && !j.workflow) p.append(h("button", {id: "replay",
    onclick: async () => { await api("POST", `/v1/jobs/${id}/replay`).then(() => job(id)).catch(fail); }}, "Replay"));
  return p;
}

// a workflow's children on one time axis, from the parent's creation to the last ending (or now)
function timeline(parent, kids, steps) {
  const start = parent.created_at;
  const end = Math.max(parent.finished_at || 0, ...kids.map((k) => k.finished_at || Date.now() / 1000), start + 0.001);
  const pct = (t) => `${(100 * (t - start) / (end - start)).toFixed(2)}%`;
  const rows = kids.map((k) => {
    const stop = k.finished_at || Date.now() / 1000, pos = k.position || {step: 0, round: 0, node: 0};
    const step = steps[pos.step] ? steps[pos.step].id : `step ${pos.step}`;
    return h("tr", {"data-child": k.job_id}, h("td", {}, jobLink(k.job_id)),
      h("td", {}, `${step}${pos.round ? " · round " + pos.round : ""} · #${pos.node}`), h("td", {}, badge(k.status), waitingNote(k)),
      h("td", {class: "num"}, dur(k.finished_at ? k.finished_at - k.created_at : null)),
      h("td", {class: "num"}, String(k.usage.calls)), h("td", {class: "num"}, usd(k.usage.cost_usd)),
      h("td", {class: "bar"}, h("div", {class: "track"}, h("div", {class: "span " + k.status,
        style: `left:${pct(k.created_at)};width:calc(${pct(stop)} - ${pct(k.created_at)})`,
        title: `${k.job_id}: ${dur(stop - k.created_at)}`}))));
  });
  return h("table", {class: "timeline", id: "children"}, h("thead", {}, h("tr", {}, ...["Child", "Step", "Status",
    "Duration", "Calls", "Cost", `Timeline (${dur(end - start)})`].map((t) => h("th", {class: ["Duration", "Calls", "Cost"]
    .includes(t) ? "num" : ""}, t)))), h("tbody", {}, ...rows));
}

async function workflowPage(j, id, show) {
  const kids = await allPages({parent: id}, 2000);
  const steps = j.steps || [];
  show(h("h1", {}, "Workflow ", h("code", {}, id), " ", badge(j.status)), actions(j, id),
    h("p", {class: "muted"}, `${j.workflow}; created ${ago(j.created_at)}`, j.finished_at ? `, took ${dur(j.finished_at - j.created_at)}` : "",
      `; ${j.usage.calls} calls, ${usd(j.usage.cost_usd)}`),
    j.error ? h("p", {class: "error", id: "job-error"}, `${j.error.error_class}: ${j.error.message}`) : "",
    h("h2", {}, "Steps"), h("div", {class: "steps", id: "steps"}, ...steps.map((s) => h("div", {class: "card"},
      h("b", {}, s.id), " ", badge(s.status), h("div", {class: "muted"}, `${s.children.total} children: ${s.children.succeeded} `
        + `succeeded, ${s.children.failed} failed, ${s.children.running} running${s.round ? "; round " + s.round : ""}`),
      h("div", {}, `${s.usage.calls} calls, ${usd(s.usage.cost_usd)}`)))),
    h("h2", {}, `Children (${kids.jobs.length}${kids.more ? "+" : ""})`), timeline(j, kids.jobs, steps),
    h("div", {class: "card"}, h("h2", {}, "Result"), h("div", {class: "answer", id: "answer"}, j.result ?? "Not finished yet.")));
  return TERMINAL.includes(j.status);
}

async function job(id) {
  const {show, fail} = pageShow();
  let seq = null;
  async function render() {
    const q = seq ? `?after=${seq}&wait_s=10` : "";
    const j = await api("GET", `/v1/jobs/${id}${q}`);
    if (j.workflow) return workflowPage(j, id, show);
    const terminal = TERMINAL.includes(j.status);
    const answer = j.result ?? (j.partial ? j.partial.text : null);
    const parent = j.parent_id ? h("p", {class: "muted", id: "parent"}, "A step of workflow ", jobLink(j.parent_id),
      j.position ? ` (step ${j.position.step}, node ${j.position.node})` : "") : "";
    show(h("h1", {}, "Job ", h("code", {}, id), " ", badge(j.status)), waitingNote(j), parent, actions(j, id),
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
    if (!(await render())) {
      let busy = false;
      every(1500, async () => {
        if (busy) return;
        busy = true;
        try { if (await render()) timers.forEach(clearInterval); } catch (e) { /* shown on the next try */ }
        busy = false;
      });
    }
  } catch (e) { fail(e); }
}
