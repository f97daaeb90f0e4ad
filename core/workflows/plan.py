"""What a workflow step's next round sends: the prompts of its children, rendered from the workflow's input
and earlier outputs, chunks sized to the step's model window. Reads only; the engine does the writes."""

from __future__ import annotations

from collections.abc import Callable

from core.assembly import required_tokens
from core.config.worker import Settings
from core.config.workflows import StepConfig, WorkflowConfig
from core.errors import InputError
from core.models import Job, JobRequest
from core.ports import BlobStore
from core.routing import Router
from core.tokenizers import counter
from core.workflows import inputs
from core.workflows.steps import child_id
from core.workflows.text import SEPARATOR, group_inputs, render, split_document

MIN_FIT = 64


class Planner:
    def __init__(self, settings: Settings, router: Router, blobs: BlobStore, load: Callable[[str], Job | None]) -> None:
        self.settings = settings
        self.router = router
        self.blobs = blobs
        self.load = load

    def reduce_inputs(self, parent: Job, config: WorkflowConfig, step: int, round_: int, over: list[str]) -> list[str]:
        """The child ids a reduce level combines: the `over` step's outputs first, then the level below's."""
        if round_ > 0:
            return over
        source = config.steps[step].reduce
        assert source is not None and parent.workflow is not None
        return self._outputs_of(parent, config, source.over)

    def prompts(self, parent: Job, config: WorkflowConfig, step: int, over: list[str]) -> list[str]:
        """One rendered prompt per child of the round. Raises InputError (a missing or unreadable input)."""
        sc = config.steps[step]
        values = {n: self._value(parent, config, n) for n in sc.names() - {"item", "items"}}
        if sc.map is None and sc.reduce is None:
            return [render(sc.prompt, values)]
        fit, count = self.fit(parent, sc, render(sc.prompt, {**values, "item": "", "items": ""}))
        if sc.map is not None:
            if sc.map.over == config.input:
                text = self._value(parent, config, config.input)
                items = split_document(text, min(sc.map.chunk_tokens, fit), count)
            else:
                items = self._texts(self._outputs_of(parent, config, sc.map.over))
            return [render(sc.prompt, {**values, "item": item}) for item in items]
        assert sc.reduce is not None
        texts = self._texts(over)
        groups = group_inputs(texts, max_inputs=sc.reduce.max_inputs, fit_tokens=fit, count=count)
        return [render(sc.prompt, {**values, "items": SEPARATOR.join(texts[i] for i in g)}) for g in groups]

    def fit(self, parent: Job, sc: StepConfig, empty_prompt: str) -> tuple[int, Callable[[str], int]]:
        """Tokens an item may take in the step's model (window minus prompt, output allowance and margin),
        and that model's counter. Raises NoRoute when no model may serve the step."""
        probe = JobRequest(prompt=empty_prompt, task=sc.task or parent.request.task, max_tokens=sc.max_tokens)
        plan = self.router.plan(parent.tenant, probe, input_tokens=sc.map.chunk_tokens if sc.map else 0)
        model = self.settings.models[plan.primary.model]
        reserved = min(plan.route.max_tokens, model.max_output_tokens)
        template = self.settings.templates[plan.route.template]
        used = required_tokens(probe.ask(), template=template, model=model, reserved_output=reserved)
        fit = model.context_window - reserved - used
        if fit < MIN_FIT:
            raise InputError(
                f"step '{sc.id}': model '{plan.primary.model}' ({model.context_window}-token window, "
                f"{reserved} reserved for output) leaves {fit} tokens for its input; lower the step's "
                "max_tokens or route its task to a model with a larger window"
            )
        return fit, counter(model.tokenizer).count

    def output(self, parent: Job, config: WorkflowConfig, step_id: str) -> str:
        return SEPARATOR.join(self._texts(self._outputs_of(parent, config, step_id)))

    def _value(self, parent: Job, config: WorkflowConfig, name: str) -> str:
        if name == config.input:
            if name not in parent.request.inputs:
                raise InputError(f"the workflow's input '{name}' was not given")
            return inputs.load(parent.request.inputs[name], self.blobs)
        return self.output(parent, config, name)

    def _outputs_of(self, parent: Job, config: WorkflowConfig, step_id: str) -> list[str]:
        assert parent.workflow is not None
        index = [s.id for s in config.steps].index(step_id)
        return parent.workflow.steps[index].outputs

    def _texts(self, ids: list[str]) -> list[str]:
        texts = []
        for cid in ids:
            child = self.load(cid)
            if child is None or child.result_text is None:
                raise InputError(f"the output of child job {cid} is gone; replay the workflow")
            texts.append(child.result_text)
        return texts


def round_ids(parent_id: str, step: int, round_: int, nodes: int) -> list[str]:
    return [child_id(parent_id, step, round_, n) for n in range(nodes)]
