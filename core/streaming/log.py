"""The partial output of a streaming job: one state-store record per job, the current attempt's text.

`stream:{job_id}` holds `{"attempt": A, "seq": S, "ends": [end offset of each seq], "text": ...}`; text
past `stream.inline_chars` lives in the blob store (`streams/JOB/A.txt`) and the record points to it, so
the record stays small on every store. Only the attempt holding the job's lease writes it; a write that
loses its compare-and-set (another attempt took over) is dropped, and that attempt's text with it.
"""

from __future__ import annotations

from typing import NamedTuple

from core.config.api import StreamConfig
from core.models import Job
from core.ports import BlobStore, StateStore

TTL_S = 24 * 3600


class Snapshot(NamedTuple):
    attempt: int
    seq: int
    ends: list[int]
    text: str
    retracted: int = 0  # the seq at which the safety guard last took back served text (0: never)

    def deltas_after(self, seq: int) -> list[tuple[int, str]]:
        """(seq, text) of every delta after `seq`, in order."""
        out = []
        for s in range(max(0, seq), self.seq):
            start = self.ends[s - 1] if s else 0
            out.append((s + 1, self.text[start : self.ends[s]]))
        return out


def key(job_id: str) -> str:
    return f"stream:{job_id}"


def source(job: Job) -> str:
    """Whose text a job's stream is: its own, or for a workflow its last step's single call once it runs."""
    wf = job.workflow
    if wf is None or wf.current != len(wf.steps) - 1 or wf.steps[-1].nodes != 1:
        return job.id
    from core.workflows.steps import child_id

    return child_id(job.id, wf.current, wf.steps[-1].round, 0)


class StreamLog:
    def __init__(self, state: StateStore, blobs: BlobStore | None, config: StreamConfig) -> None:
        self.state = state
        self.blobs = blobs
        self.config = config

    def read(self, job_id: str) -> Snapshot | None:
        rec = self.state.get(key(job_id))
        if rec is None:
            return None
        v = rec.value
        text = v.get("text")
        if text is None and v.get("blob") and self.blobs is not None:
            try:
                text = self.blobs.get(v["blob"]).decode()[: v["ends"][-1] if v["ends"] else 0]
            except KeyError:
                return None
        return Snapshot(int(v["attempt"]), int(v["seq"]), list(v["ends"]), text or "", int(v.get("retracted", 0)))

    def write(
        self, job_id: str, attempt: int, text: str, ends: list[int], version: int | None, retracted: int = 0
    ) -> int | None:
        """Write the attempt's text so far; the record's new version, or None if another writer won."""
        value: dict[str, object] = {"attempt": attempt, "seq": len(ends), "ends": ends, "text": text}
        if retracted:
            value["retracted"] = retracted
        if len(text) > self.config.inline_chars and self.blobs is not None:
            blob = f"streams/{job_id}/{attempt}.txt"
            self.blobs.put(blob, text.encode())
            value = {**value, "text": None, "blob": blob}
        k = key(job_id)
        if version is None:  # this attempt's first write: replace an earlier attempt's record, or create it
            current = self.state.get(k)
            if current is None:
                if not self.state.put_if_absent(k, value, ttl_s=TTL_S):
                    return None
                created = self.state.get(k)
                return created.version if created is not None else None
            version = current.version
        return version + 1 if self.state.compare_and_set(k, value, expected_version=version, ttl_s=TTL_S) else None

    def erase(self, job_id: str) -> int:
        """The job's streamed text gone (its thread was erased): the record blanked (an update, which every role
        that erases may make) and the spilled attempts deleted; how many objects were."""
        rec = self.state.get(key(job_id))
        if rec is not None and (rec.value.get("text") or rec.value.get("blob")):
            blank = {"attempt": rec.value["attempt"], "seq": 0, "ends": [], "text": ""}
            self.state.compare_and_set(key(job_id), blank, expected_version=rec.version, ttl_s=TTL_S)
        if self.blobs is None:
            return 0
        spilled = self.blobs.list(f"streams/{job_id}/")
        for k in spilled:
            self.blobs.delete(k)
        return len(spilled)
