"""The embedder computes the model's own vectors, without the libraries that made start-up slow.

sentence-transformers is the model's reference implementation: our encoder (torch's
`nn.TransformerEncoder` over the same weights) must give the same vector for every phrase
search embeds, or the vectors stored in existing indexes and every similarity threshold
tuned on them would silently drift.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.search_quality import list_phrases
from clinsum.embeddings import MAX_TOKENS, load_embedder, model_dir

REPO = Path(__file__).resolve().parent.parent
FILES = (REPO / "patient_data.csv", REPO / "tests" / "data" / "synthea_patients.csv")


def phrases() -> list[str]:
    """Every distinct list entry of both files' history, symptom and medication cells (as the
    search benchmark reads them), and texts at the edges: empty, one letter, accents and
    symbols, and longer than the model's token limit (cut at MAX_TOKENS, as
    sentence-transformers cuts it)."""
    entries = sorted({t for path in FILES for t in list_phrases(path)})
    edges = ["", "a", "Prédiabète naïve ☃ 血压", "HTN; T2DM & CKD-3", "chest pain " * 200]
    return edges + entries


@pytest.fixture(scope="module")
def reference() -> object:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    assert model.max_seq_length == MAX_TOKENS
    return model


def test_vectors_equal_sentence_transformers(reference) -> None:
    texts = phrases()
    assert len(texts) > 250
    ours = np.array(load_embedder().encode(texts), dtype=np.float32)
    theirs = reference.encode(texts, batch_size=64, normalize_embeddings=True)
    assert ours.shape == theirs.shape == (len(texts), 384)
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_batch_padding_does_not_change_a_vector() -> None:
    """A phrase embedded beside a much longer one (so padded) gets the vector it gets alone."""
    embedder = load_embedder()
    alone = np.array(embedder.encode(["asthma"]))
    beside = np.array(embedder.encode(["asthma", "chronic obstructive pulmonary disease " * 9]))
    assert np.abs(alone[0] - beside[0]).max() < 1e-5
    assert embedder.encode([]) == []


def test_loading_imports_neither_transformers_nor_sentence_transformers() -> None:
    """What start-up at 100,000 patients relies on: those imports alone took 3.4 s."""
    code = (
        "import sys; from clinsum.embeddings import load_embedder;"
        "load_embedder().encode(['chest pain']);"
        "print(sorted(m for m in ('transformers', 'sentence_transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
