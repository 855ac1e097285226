"""Patient search: the query against each distinct phrase of the records, then per patient.

Pure vector search over whole records ranks "patients who sound similar" first, and that is
not what a clinician asking for "HTN" or "cervicalgia" wants: they want the patients whose
record says so, whichever words it uses. So the records are cut into phrases (list entries,
note clauses); each distinct phrase is compared with the query once (`clinsum.phrases`: exact
words, vocabulary synonyms and abbreviations, narrower phrases, sentence-embedding
similarity), and numpy spreads the answer to the patients who hold the phrase, weighted by
the field it is in. Only patients with such evidence are returned.

Distinct phrases are few even at 100,000 patients (a few thousand), so only they are
embedded, and their vectors are kept in Chroma (embedded on disk beside the data file, or a
`chroma run` server) under a hash of the phrase text: a phrase is embedded once, ever, and
an unchanged file starts without embedding anything.

A query word that is no word at all ("hypertention") is first respelled to the closest word
the records or the vocabulary use (`clinsum.spelling`); a correctly spelled word never is.
`find` says what was searched (`Found.corrected`).

    python -m clinsum.search --data patient_data.csv [--query "shortness of breath"]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import re
import socket
import sys
import threading
import zipfile
from array import array
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from clinsum import logs, records
from clinsum.phrases import (
    STOPWORDS,
    Form,
    Match,
    PhraseTable,
    has_searchable_words,
    list_items,
    mask_numbers,
    note_clauses,
    query_parts,
    unmask,
    whole_query,
)
from clinsum.phrases import key as phrase_key
from clinsum.records import Patient, RecordError, Records, source_hash
from clinsum.spelling import LETTERS, Speller, load_dictionary, vocabulary_words

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

    from clinsum.embeddings import Embedder

log = logging.getLogger("Search")

MAX_QUERY_CHARS = 500
MAX_TOP_K = 50
FILTER_KEYS = ("gender", "max_age", "min_age", "min_risk")
# Bump when what is embedded for a phrase changes, so old vectors are not reused.
INDEX_VERSION = 2
EMBED_CHUNK = 256
DEFAULT_CHROMA_PORT = 8000
CONNECT_TIMEOUT_S = 5.0

# Where a phrase was found, and how much that counts: the current history is the strongest
# evidence, a past visit's list less, a clause of a note least.
FIELDS = ("history", "symptoms", "medications", "past visits", "visit notes")
FIELD_WEIGHTS = (1.0, 0.9, 0.8, 0.6, 0.4)
NOTES = 4
EXTRA_FIELD_BONUS = 0.01
NAME_WEIGHT = 1.0
QUERY_CACHE = 1024
_NAME_WORD = re.compile(r"[^\W\d_][\w'-]*")


class SearchError(ValueError):
    """A bad search parameter or an unusable index; the message says which and why."""


class SearchUnavailable(SearchError):
    """The index itself failed (Chroma unreachable, a broken store), not the request."""


@dataclass
class Hit:
    patient_id: int
    name: str
    age: int
    gender: str
    score: float
    # Strongest first: 'Chronic neck pain (history, similar to "cervicalgia" 0.63)'.
    matched: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Found:
    """A search's answer: the hits, and the query as searched when words were respelled."""

    hits: list[Hit]
    corrected: str | None = None  # "hypertension" for "hypertention"; None if nothing respelled
    fixes: dict[str, str] | None = None  # typed word -> the word it was read as


def _cells(patient: Patient) -> list[tuple[int, tuple[str, ...] | str]]:
    """(field index, cell) of every non-empty searchable cell of the record: a list's entries
    as the record holds them, or a note's text. Resolved conditions count as history."""
    cells: list[tuple[int, tuple[str, ...] | str]] = [
        (0, patient.medical_history),
        (1, patient.current_symptoms),
        (2, patient.current_medications),
        (3, patient.past_history),
    ]
    for v in patient.visit_history:
        cells += [(3, v.history), (3, v.symptoms), (3, v.medications), (4, v.notes), (4, v.outcome)]
    return [(field, cell) for field, cell in cells if cell]


def _check_query(query: object, top_k: object) -> str:
    if not isinstance(query, str):
        raise SearchError(f"query must be a string, not {type(query).__name__}")
    if len(query) > MAX_QUERY_CHARS:
        raise SearchError(
            f"query is too long ({len(query)} characters; the limit is {MAX_QUERY_CHARS})"
        )
    if not query.strip():
        raise SearchError("query must not be empty")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise SearchError(f"top_k must be a whole number from 1 to {MAX_TOP_K} (got {top_k!r})")
    reason = unsearchable(query)
    if reason:
        raise SearchError(f"query {query.strip()[:40]!r} {reason}")
    return query.strip()


def unsearchable(query: str) -> str | None:
    """Why `query` has nothing to search for, or None if it has.

    The tool registry asks this before the index is touched, so a stop-word-only query is
    refused like any other bad parameter; the index asks it again for direct callers.
    """
    if has_searchable_words(query):
        return None
    return (
        "has nothing to search for: it needs a word of two or more letters that is not a "
        "stop-word (e.g. a condition, symptom, drug or name)"
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_filters(filters: object, scale: float = 1.0) -> dict[str, Any]:
    """The filters that are set, validated; None values count as not set.

    `min_risk` is on the scale of the loaded file's scores (0-1, or 0-10 for the original
    tool's files): this is the one place that knows it.
    """
    if filters is None:
        return {}
    if not isinstance(filters, Mapping):
        raise SearchError(f"filters must be an object, not {type(filters).__name__}")
    unknown = sorted(str(k) for k in filters if k not in FILTER_KEYS)
    if unknown:
        raise SearchError(
            f"unknown filter(s): {', '.join(unknown)} (allowed: {', '.join(FILTER_KEYS)})"
        )
    out = {k: v for k, v in filters.items() if v is not None}
    for key in ("min_age", "max_age"):
        if key in out:
            value = out[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 150:
                raise SearchError(
                    f"filters.{key} must be a whole number from 0 to 150 (got {value!r})"
                )
    if out.get("min_age", 0) > out.get("max_age", 150):
        raise SearchError(
            f"filters.min_age ({out['min_age']}) must not exceed filters.max_age ({out['max_age']})"
        )
    if "gender" in out:
        gender = out["gender"]
        if not isinstance(gender, str) or not gender.strip() or len(gender) > 40:
            raise SearchError(f"filters.gender must be a non-empty string (got {gender!r})")
        out["gender"] = gender.strip().lower()
    if "min_risk" in out:
        risk = out["min_risk"]
        if not _is_number(risk) or not 0 <= risk <= scale:
            raise SearchError(
                f"filters.min_risk must be a number from 0 to {scale:g}, the scale of this "
                f"data's risk scores (got {risk!r})"
            )
        out["min_risk"] = float(risk)
    return out


def _connect(data_path: Path, chroma_url: str | None) -> tuple[ClientAPI, str]:
    """A Chroma client and a description of where it stores data, for messages."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if chroma_url is None:
        folder = data_path.parent / f"{data_path.stem}.chroma"
        try:
            # Patient data: a new index folder is its owner's only; an existing one keeps its mode.
            folder.mkdir(mode=0o700, exist_ok=True)
            return chromadb.PersistentClient(path=str(folder), settings=settings), str(folder)
        except Exception as exc:
            raise SearchUnavailable(f"cannot open the search index in {folder}: {exc}") from None
    try:
        parts = urlsplit(chroma_url)
        port = parts.port or DEFAULT_CHROMA_PORT
    except ValueError as exc:
        raise SearchError(f"chroma_url {chroma_url!r} is malformed: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise SearchError(
            f"chroma_url {chroma_url!r} is malformed: expected http://HOST:PORT or https://HOST:PORT"
        )
    try:
        # chromadb's HTTP client has no connect timeout: a dropped SYN would hang for minutes.
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_S).close()
        client = chromadb.HttpClient(
            host=parts.hostname, port=port, ssl=parts.scheme == "https", settings=settings
        )
        client.heartbeat()
    except TimeoutError:
        raise SearchUnavailable(
            f"Chroma server at {chroma_url} is unreachable: "
            f"no answer within {CONNECT_TIMEOUT_S:g} s"
        ) from None
    except Exception as exc:
        raise SearchUnavailable(f"Chroma server at {chroma_url} is unreachable: {exc}") from None
    return client, chroma_url


def _phrase_vectors(
    client: ClientAPI, embedder: Embedder, texts: Sequence[str], show_progress: bool
) -> tuple[np.ndarray, int]:
    """Vectors of `texts` (normalised float32 rows), and how many had to be embedded.

    Stored in one Chroma collection per model, keyed by a hash of the text: any file, any
    version of a file, reuses every phrase it shares with what was embedded before.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    name = re.sub(r"[^a-zA-Z0-9_-]", "-", f"phrases-{embedder.name}-v{INDEX_VERSION}")
    collection = client.get_or_create_collection(
        name,
        configuration={"hnsw": {"space": "cosine"}},
        metadata={"model": embedder.name, "index_version": INDEX_VERSION},
        embedding_function=None,
    )
    ids = [hashlib.sha256(t.encode()).hexdigest()[:32] for t in texts]
    found: dict[str, Any] = {}
    batch = max(1, client.get_max_batch_size())
    for start in range(0, len(ids), batch):
        got = collection.get(ids=ids[start : start + batch], include=["embeddings"])
        found.update(zip(got["ids"], got["embeddings"], strict=True))
    missing = [j for j, i in enumerate(ids) if i not in found]
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not show_progress or not missing,
        transient=True,
    )
    with progress:
        task = progress.add_task("Embedding phrases", total=len(missing))
        for start in range(0, len(missing), min(EMBED_CHUNK, batch)):
            chunk = missing[start : start + min(EMBED_CHUNK, batch)]
            vectors = embedder.encode([texts[j] for j in chunk])
            collection.add(
                ids=[ids[j] for j in chunk],
                embeddings=vectors,
                documents=[texts[j] for j in chunk],
            )
            found.update(zip((ids[j] for j in chunk), vectors, strict=True))
            progress.advance(task, len(chunk))
    matrix = np.array([found[i] for i in ids], dtype=np.float32).reshape(len(ids), -1)
    return matrix, len(missing)


class PatientIndex:
    """Search over one patients file; build with `PatientIndex.open`."""

    def __init__(
        self,
        patients: Mapping[int, Patient],
        corpus: _Corpus,
        vectors: np.ndarray,
        embedder: Embedder,
        where: str,
        embedded_count: int,
    ) -> None:
        self.where = where
        # True when this open embedded phrases it had not seen; False when all were cached.
        self.rebuilt = embedded_count > 0
        self.embedded_count = embedded_count
        self._embedder = embedder
        self._corpus = corpus
        self._vectors = vectors
        self._table = corpus.table
        # Columns, not objects: a patient is decoded only when it is a hit.
        self._records = records = Records.of(patients)
        self._ages = records.ages
        self._risks = records.risks
        self._scale = records.scale
        genders = [g.lower() for g in records.genders]
        self._gender_codes = {g: i for i, g in enumerate(dict.fromkeys(genders))}
        self._genders = np.array([self._gender_codes[g] for g in genders], dtype=np.int16)
        self._query_vectors: dict[str, np.ndarray] = {}  # oldest first, at most QUERY_CACHE
        self._cache_lock = threading.Lock()
        self.speller = _speller(self._table, corpus.name_words)

    @classmethod
    def open(
        cls,
        patients: Mapping[int, Patient],
        data_path: str | Path,
        *,
        chroma_url: str | None = None,
        embedder: Embedder | None = None,
        show_progress: bool = True,
    ) -> PatientIndex:
        """Index the records' phrases; embed only phrases the vector store has not seen."""
        if not patients:
            raise SearchError("there are no patients to index")
        data_path = Path(data_path).resolve()
        if embedder is None:
            from clinsum.embeddings import load_embedder

            embedder = load_embedder()
        client, where = _connect(data_path, chroma_url)
        patients = Records.of(patients)
        corpus = _Corpus.cached(patients, data_path)
        try:
            vectors, embedded = _phrase_vectors(
                client, embedder, corpus.table.texts[: corpus.table.embedded], show_progress
            )
        except SearchError:
            raise
        except Exception as exc:
            raise SearchUnavailable(f"the search index in {where} failed: {exc}") from None
        log.info(
            "%s index for %s (%d patients, %d phrases, %d newly embedded) in %s",
            "Built" if embedded else "Reused",
            data_path.name,
            len(patients),
            corpus.table.embedded,
            embedded,
            where,
        )
        return cls(patients, corpus, vectors, embedder, where, embedded)

    def _cosines(self, forms: Sequence[Form]) -> list[np.ndarray]:
        """Cosine of each form with every phrase (0 for the note clauses, never embedded).

        The forms not seen lately are embedded in one batch: one model call per search.
        """
        texts = [f.text for f in forms]
        with self._cache_lock:
            vectors = {t: self._query_vectors.get(t) for t in texts}
        missing = [t for t, v in vectors.items() if v is None]
        if missing:
            try:
                encoded = self._embedder.encode(missing)
            except Exception as exc:  # torch or the model failing is the index failing (-32006)
                raise SearchUnavailable(f"the query embedder failed: {exc}") from None
            with self._cache_lock:
                for text, vector in zip(missing, encoded, strict=True):
                    vectors[text] = np.asarray(vector, dtype=np.float32)
                    self._query_vectors[text] = vectors[text]
                while len(self._query_vectors) > QUERY_CACHE:
                    del self._query_vectors[next(iter(self._query_vectors))]
        total = len(self._table.texts)
        out = []
        for text in texts:
            cos = np.zeros(total, dtype=np.float32)
            if len(self._vectors):
                cos[: self._table.embedded] = self._vectors @ vectors[text]
            out.append(cos)
        return out

    def _eligible(self, positions: np.ndarray, filters: Mapping[str, Any]) -> np.ndarray:
        keep = np.ones(len(positions), dtype=bool)
        if "min_age" in filters:
            keep &= self._ages[positions] >= filters["min_age"]
        if "max_age" in filters:
            keep &= self._ages[positions] <= filters["max_age"]
        if "gender" in filters:
            keep &= self._genders[positions] == self._gender_codes.get(filters["gender"], -1)
        if "min_risk" in filters:
            keep &= self._risks[positions] >= filters["min_risk"]
        return keep

    def matches(self, query: str, fixes: dict[str, str] | None = None) -> list[dict[int, Match]]:
        """For each part of the query, the phrases that answer it and how.

        "diabetes with chest pain" is two parts, so that patients with both rank first; a
        query is split at "and", "with", "," only if every part finds something on its own
        ("concussion with no loss of consciousness" stays whole). One model call embeds the
        readings of the whole and of the parts together, and only if some part needs it.
        `fixes` (typed word -> respelled word) says which words of `query` were respelled.
        """
        whole = whole_query(query, fixes)
        parts = query_parts(query, fixes)
        split = parts if len(parts) > 1 else []
        forms = whole + [f for part in split for f in part]
        got: list[np.ndarray] = []

        def cosines(start: int, end: int) -> Callable[[], list[np.ndarray]]:
            def get() -> list[np.ndarray]:
                if not got:
                    got.extend(self._cosines(forms))
                return got[start:end]

            return get

        found_whole = self._table.match(whole, cosines(0, len(whole)))
        found_parts, start = [], len(whole)
        for part in split:
            found_parts.append(self._table.match(part, cosines(start, start + len(part))))
            start += len(part)
        if found_parts and all(found_parts):
            return found_parts
        return [found_whole]

    def search(self, query: str, top_k: int = 5, filters: dict | None = None) -> list[Hit]:
        """Best `top_k` patients for `query`; safe to call from several threads at once.

        Only patients whose records answer the query are returned, so the list may be short
        or empty; it is never padded with records that merely sound alike.
        """
        return self.find(query, top_k, filters).hits

    def find(self, query: str, top_k: int = 5, filters: dict | None = None) -> Found:
        """`search`, with the query as searched when misspelled words were respelled.

        Raises:
            SearchError: a bad parameter, or a query of stop-words only once respelled.
            SearchUnavailable: the index itself failed.
        """
        text = _check_query(query, top_k)
        wanted = _check_filters(filters, self._scale)
        spelled = self.speller.respell(text)
        if spelled.changed and not has_searchable_words(spelled.text):
            raise SearchError(
                f"query {text[:40]!r} has nothing to search for: it reads as "
                f"{spelled.text[:40]!r}, stop-words only; it needs a word that is not a "
                "stop-word (e.g. a condition, symptom, drug or name)"
            )
        hits = self._ranked(spelled.text, top_k, wanted, spelled.fixes)
        if not spelled.changed:
            return Found(hits)
        return Found(hits, spelled.text, spelled.fixes)

    def _ranked(
        self, text: str, top_k: int, wanted: Mapping[str, Any], fixes: dict[str, str]
    ) -> list[Hit]:
        parts = self.matches(text, fixes)
        corpus = self._corpus
        total = np.zeros(len(self._records), dtype=np.float32)
        for found in parts:
            total += corpus.scores(found)
        names = [w for w in dict.fromkeys(_NAME_WORD.findall(text.lower())) if w in corpus.names]
        for word in names:
            total[corpus.names[word]] += NAME_WEIGHT
        typed = {fixed: typo for typo, fixed in fixes.items()}
        labels = {
            w: f'{w} (name, spelling of "{typed[w]}")' if w in typed else f"{w} (name)"
            for w in names
        }
        candidates = np.flatnonzero(total)
        candidates = candidates[self._eligible(candidates, wanted)]
        if len(candidates) > top_k:
            cutoff = np.partition(total[candidates], -top_k)[-top_k]
            candidates = candidates[total[candidates] >= cutoff]
        order = np.lexsort((candidates, -total[candidates]))[:top_k]
        return [
            self._hit(int(candidates[j]), float(total[candidates[j]]), parts, labels) for j in order
        ]

    def _hit(
        self, position: int, score: float, parts: list[dict[int, Match]], names: dict[str, str]
    ) -> Hit:
        """The hit with `matched` saying, strongest first, which record phrase answered the
        query, in which field, and how: exact, synonym, narrower, or similar with its cosine."""
        patient = self._records.at(position)
        notes = [v.notes for v in patient.visit_history]
        shown: dict[str, float] = {}
        for field, phrase in self._corpus.phrases_of(patient):
            for found in parts:
                m = found.get(phrase)
                if m is not None:
                    text = unmask(self._table.texts[phrase], notes)
                    label = f"{text} ({FIELDS[field]}, {m.how})"
                    shown[label] = max(shown.get(label, 0.0), m.strength * FIELD_WEIGHTS[field])
        matched = sorted(shown, key=lambda s: -shown[s])
        own = _NAME_WORD.findall(patient.name.lower())
        matched += [label for w, label in names.items() if w in own]
        return Hit(
            patient_id=patient.patient_id,
            name=patient.name,
            age=patient.age,
            gender=patient.gender,
            score=round(score, 4),
            matched=matched,
        )


def _speller(table: PhraseTable, name_words: Sequence[str]) -> Speller:
    """What a query may be respelled to: the words of the records' phrases (weighted by how
    many phrases use them), the patients' names, the vocabulary and the stop-words."""
    targets = Counter(w for text in table.texts for w in set(LETTERS.findall(text.lower())))
    targets.update(name_words)
    targets.update(vocabulary_words())
    return Speller(targets, load_dictionary(), STOPWORDS)


class _Corpus:
    """Which patients hold which phrase in which field, as arrays rather than objects.

    Records are cut into items (list entries, note clauses) and those repeat: 100,000
    generated patients hold a few thousand distinct items. Each distinct item is split,
    checked for negation and looked up once; numpy spreads the answers to the patients.
    Building this costs a pass over every record, so it is saved beside the data file
    (`<stem>.terms.npz`) under the file's hash and reloaded while the file is unchanged.
    """

    def __init__(
        self,
        size: int,
        item_keys: list[tuple[int, str]],
        texts: list[str],
        embedded: int,
        arrays: Mapping[str, np.ndarray],
        name_words: list[str],
    ) -> None:
        self.size = size
        self.arrays = dict(arrays)
        self.item_keys = item_keys
        self.item_ids = {k: i for i, k in enumerate(item_keys)}
        self.item_positions = arrays["item_positions"]
        self.item_bounds = arrays["item_bounds"]
        self.item_phrase = arrays["item_phrase"]
        self.item_field = arrays["item_field"]
        order = np.argsort(self.item_phrase, kind="stable")
        self.phrase_items = order[self.item_phrase[order] >= 0]
        counts = np.bincount(self.item_phrase[self.item_phrase >= 0], minlength=len(texts))
        self.phrase_bounds = np.r_[0, np.cumsum(counts)]
        bounds, positions = arrays["name_bounds"], arrays["name_positions"]
        self.name_words = name_words
        self.names = {w: positions[bounds[i] : bounds[i + 1]] for i, w in enumerate(name_words)}
        self.table = PhraseTable(texts, embedded)

    @classmethod
    def build(cls, patients: Collection[Patient]) -> _Corpus:
        item_ids: dict[tuple[int, str], int] = {}
        cell_items: dict[tuple[int, str], list[int]] = {}
        # 4-byte ints, not Python lists: 100,000 patients make ~3 million occurrences.
        occurrence_item = array("i")
        occurrence_position = array("i")
        names: dict[str, list[int]] = {}
        for i, patient in enumerate(patients):
            before = len(occurrence_item)
            for field, text in _cells(patient):
                # Notes differ mostly in their numbers: without them, most repeat.
                cell = (field, text) if field < NOTES else (field, mask_numbers(str(text)))
                ids = cell_items.get(cell)
                if ids is None:
                    split = list_items if field < NOTES else note_clauses
                    ids = cell_items[cell] = [
                        item_ids.setdefault((field, item), len(item_ids)) for item in split(cell[1])
                    ]
                occurrence_item.extend(ids)
            occurrence_position.extend(itertools.repeat(i, len(occurrence_item) - before))
            for word in set(_NAME_WORD.findall(patient.name.lower())):
                names.setdefault(word, []).append(i)
        del cell_items

        # Item -> sorted positions of the patients who have it, as one array plus bounds.
        n = max(1, len(patients))
        keys = np.frombuffer(occurrence_item, dtype=np.int32).astype(np.int64) * n
        keys += np.frombuffer(occurrence_position, dtype=np.int32)
        del occurrence_item, occurrence_position
        keys.sort()
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys

        # Phrases: list entries first (embedded), then note clauses no list entry matches.
        phrase_of_key: dict[str, int] = {}
        texts: list[str] = []
        item_phrase = np.full(len(item_ids), -1, dtype=np.int32)
        item_field = np.zeros(len(item_ids), dtype=np.int8)
        embedded = 0
        for (field, text), item in sorted(item_ids.items(), key=lambda kv: kv[0][0] >= NOTES):
            k = phrase_key(text)
            if not k:
                continue
            if k not in phrase_of_key:
                phrase_of_key[k] = len(texts)
                texts.append(text)
                if field < NOTES:
                    embedded = len(texts)
            item_phrase[item] = phrase_of_key[k]
            item_field[item] = field
        name_words = list(names)
        arrays = {
            "item_positions": (keys % n).astype(np.int32),
            "item_bounds": np.searchsorted(keys // n, np.arange(len(item_ids) + 1)),
            "item_phrase": item_phrase,
            "item_field": item_field,
            "name_positions": np.array([p for w in name_words for p in names[w]], dtype=np.int32),
            "name_bounds": np.r_[0, np.cumsum([len(names[w]) for w in name_words])],
        }
        return cls(len(patients), list(item_ids), texts, embedded, arrays, name_words)

    @classmethod
    def cached(cls, records: Records, data_path: Path) -> _Corpus:
        """The saved corpus if it was made from this exact file content, else a new one
        (saved for next time when the folder is writable)."""
        store = data_path.parent / f"{data_path.stem}.terms.npz"
        try:
            data_hash = records.source_sha256 or source_hash(data_path)
        except OSError as exc:
            raise SearchError(f"cannot read the data file {data_path}: {exc}") from None
        fresh = {"data_hash": data_hash, "version": INDEX_VERSION, "size": len(records)}
        with (
            contextlib.suppress(OSError, ValueError, KeyError, zipfile.BadZipFile),
            np.load(store) as saved,
        ):
            meta = json.loads(str(saved["meta"]))
            if all(meta[k] == v for k, v in fresh.items()):
                arrays = {name: saved[name] for name in saved.files if name != "meta"}
                keys = [(int(f), t) for f, t in meta["item_keys"]]
                return cls(
                    meta["size"], keys, meta["texts"], meta["embedded"], arrays, meta["names"]
                )
        corpus = cls.build(records.values())
        meta = {
            "data_hash": data_hash,
            "version": INDEX_VERSION,
            "size": corpus.size,
            "item_keys": corpus.item_keys,
            "texts": corpus.table.texts,
            "embedded": corpus.table.embedded,
            "names": corpus.name_words,
        }
        tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
        try:
            # The record's phrases are patient data: readable by the owner only.
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)), **corpus.arrays)
            tmp.replace(store)
        except OSError as exc:
            log.warning(
                "could not save the term index to %s (%s): it is rebuilt each start", store, exc
            )
            tmp.unlink(missing_ok=True)
        return corpus

    def positions(self, item: int) -> np.ndarray:
        return self.item_positions[self.item_bounds[item] : self.item_bounds[item + 1]]

    def scores(self, found: Mapping[int, Match]) -> np.ndarray:
        """Per patient: the strongest answer in the strongest field, plus a little for every
        further field that answers too."""
        best = np.zeros(self.size, dtype=np.float32)
        fields = np.zeros(self.size, dtype=np.int8)
        for phrase, m in found.items():
            span = self.phrase_items[self.phrase_bounds[phrase] : self.phrase_bounds[phrase + 1]]
            for item in span:
                field = int(self.item_field[item])
                pos = self.positions(int(item))
                best[pos] = np.maximum(best[pos], m.strength * FIELD_WEIGHTS[field])
                fields[pos] |= 1 << field
        extra = np.unpackbits(fields[:, None].view(np.uint8), axis=1).sum(axis=1)
        return best + EXTRA_FIELD_BONUS * np.maximum(extra.astype(np.float32) - 1, 0)

    def phrases_of(self, patient: Patient) -> list[tuple[int, int]]:
        """(field, phrase) of every item of one record, for `matched`."""
        out = []
        for field, text in _cells(patient):
            split = list_items if field < NOTES else note_clauses
            for item in split(text):
                item_id = self.item_ids.get((field, item))
                if item_id is not None:
                    phrase = int(self.item_phrase[item_id])
                    if phrase >= 0:
                        out.append((field, phrase))
        return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clinsum.search",
        description="Build (or check) the search index for a patients file; optionally query it.",
    )
    parser.add_argument(
        "--data", default="patient_data.csv", help="patients file (CSV or the original's JSON)"
    )
    parser.add_argument("--chroma-url", help="use a Chroma server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--query", help="run one search and print the hits")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    logs.setup("info")
    try:
        patients = records.load(args.data).patients
        index = PatientIndex.open(patients, args.data, chroma_url=args.chroma_url)
        found = index.find(args.query, args.top_k) if args.query else Found([])
    except (RecordError, SearchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if found.corrected is not None:
        print(f"Showing results for {found.corrected!r} (typed: {args.query!r})")
    for hit in found.hits:
        print(f"{hit.score:7.3f}  #{hit.patient_id:<6} {hit.name:<24} {'; '.join(hit.matched)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
