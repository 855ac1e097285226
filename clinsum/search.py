"""Patient search: vocabulary-aware term matching first, vector similarity to break ties.

Pure vector search over short clinical records ranks "patients who sound similar" first, and
that is not what a clinician asking for "HTN" wants: they want the patients who have
hypertension, whichever words their record uses. So the index keeps, in memory, which
patients name each vocabulary concept (via `vocab.find_concepts`) and in which field, and
the term score from that dominates the ranking. A query naming a known concept returns only
patients with evidence for it; the cosine similarity from Chroma orders patients with equal
evidence, and only a query naming nothing the vocabulary knows is answered by similarity.

The Chroma collection is rebuilt only when the data file's bytes change (a sha256 kept in
the collection metadata), so a warm start does no embedding at all.

    python -m clinsum.search --data patient_data.csv [--query "shortness of breath"]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import logging
import math
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from clinsum import logs
from clinsum.digest import chronological
from clinsum.records import Patient, RecordError, file_hash, load_patients
from clinsum.vocab import MEDICATIONS, find_concepts

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection

    from clinsum.embeddings import Embedder

log = logging.getLogger("Search")

MAX_QUERY_CHARS = 500
MAX_TOP_K = 50
FILTER_KEYS = ("gender", "max_age", "min_age", "min_risk")
# Bump when the document text or metadata layout changes, so old collections get rebuilt.
INDEX_VERSION = 1
EMBED_CHUNK = 256
DEFAULT_CHROMA_PORT = 8000
CONNECT_TIMEOUT_S = 5.0

# Where a concept was found. The gaps between these weights are larger than any cosine
# similarity, so the vector score never lifts a patient over one with stronger evidence in
# the record itself.
FIELDS = ("history", "symptoms", "medications", "past visits", "visit notes")
FIELD_WEIGHTS = (4.0, 3.0, 2.0, 1.0, 0.8)
# A condition only implied by a drug for it (current / past medications) counts less than the
# condition itself: evidence bits 5 and 6 after the five field bits.
VIA_DRUG_BIT = {2: 5, 3: 6}
BIT_WEIGHTS = (*FIELD_WEIGHTS, 1.5, 0.5)
EXTRA_FIELD_BONUS = 0.1
NAME_WORD_WEIGHT = 2.0
TEXT_WORD_WEIGHT = 0.5
# Nearest neighbours fetched without a Chroma `where`: filtering 100,000 records inside Chroma
# took ~300 ms, so filters are applied here and Chroma filters only when too few remain.
VECTOR_POOL = 200

_WORD = re.compile(r"[a-z][a-z0-9'-]*")
# List cells split on , and ; and notes into sentences ("12.5mg" keeps its dot).
_ITEM_SPLIT = re.compile(r"[,;]|[.!?](?=\s|$)")
_STOPWORD_TEXT = """
    a about all an and any are as at be been but by can current currently do does for from
    had has have having her his history in is it its me my no not of on or patient patients
    people person show she that the their them they those to under was were what which who
    whom with without
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _score(mask: int) -> float:
    """Best evidence's weight, plus a little for each further kind of evidence."""
    weights = [w for bit, w in enumerate(BIT_WEIGHTS) if mask >> bit & 1]
    return max(weights) + EXTRA_FIELD_BONUS * (len(weights) - 1) if weights else 0.0


_SCORES = np.array([_score(mask) for mask in range(1 << len(BIT_WEIGHTS))])


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
    matched: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1 << 18)
def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(text.lower()) if w not in STOPWORDS)


def _items(text: str) -> list[str]:
    return [part.strip() for part in _ITEM_SPLIT.split(text) if part.strip()]


def _cells(patient: Patient) -> list[tuple[int, str]]:
    """(field index, text) of every non-empty searchable cell of the record."""
    cells = [
        (0, patient.medical_history),
        (1, patient.current_symptoms),
        (2, patient.current_medications),
    ]
    for v in patient.visit_history:
        cells += [(3, v.history), (3, v.symptoms), (3, v.medications), (4, v.notes), (4, v.outcome)]
    return [(field, text) for field, text in cells if text]


@lru_cache(maxsize=1 << 18)
def _item_evidence(field: int, item: str) -> tuple[tuple[str, int, str], ...]:
    """(concept, evidence bit, how `matched` shows it) for one list item or note sentence.

    Memoised: the same items ("Metformin 500mg", "Reports fatigue") recur across thousands
    of records, and `find_concepts` is the costly part of indexing.
    """
    out: list[tuple[str, int, str]] = []
    for concept, phrase in find_concepts(item).items():
        shown = f"{phrase} ({FIELDS[field]})"
        out.append((concept, field, shown))
        if field in VIA_DRUG_BIT and concept.startswith("medication:"):
            # Only a drug for one condition implies it: aspirin or atorvastatin say little
            # about a stroke, albuterol does not tell asthma from COPD.
            treats = MEDICATIONS.get(concept.split(":", 1)[1], ())
            if len(treats) == 1:
                out.append((f"condition:{treats[0]}", VIA_DRUG_BIT[field], shown))
    return tuple(out)


def _document(patient: Patient) -> str:
    """The text embedded for a patient: the clinical content and the latest note only, since
    embedding cost grows with length and the older notes repeat the same conditions."""
    visits = chronological(patient.visit_history)
    latest = visits[-1].notes if visits else ""
    return (
        f"{patient.age}-year-old {patient.gender.lower()}. "
        f"Conditions: {patient.medical_history or 'none recorded'}. "
        f"Symptoms: {patient.current_symptoms or 'none recorded'}. "
        f"Medications: {patient.current_medications or 'none'}. "
        f"Latest visit: {latest}"
    )


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
    return query.strip()


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_filters(filters: object) -> dict[str, Any]:
    """The filters that are set, validated; None values count as not set."""
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
        if not _is_number(risk) or not 0 <= risk <= 1:
            raise SearchError(f"filters.min_risk must be a number from 0 to 1 (got {risk!r})")
        out["min_risk"] = float(risk)
    return out


def _chroma_where(filters: Mapping[str, Any]) -> dict[str, Any] | None:
    clauses: list[dict[str, Any]] = []
    if "min_age" in filters:
        clauses.append({"age": {"$gte": filters["min_age"]}})
    if "max_age" in filters:
        clauses.append({"age": {"$lte": filters["max_age"]}})
    if "gender" in filters:
        clauses.append({"gender": {"$eq": filters["gender"]}})
    if "min_risk" in filters:
        clauses.append({"risk": {"$gte": filters["min_risk"]}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


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


class PatientIndex:
    """Search over one patients file; build with `PatientIndex.open`."""

    def __init__(
        self,
        patients: Mapping[int, Patient],
        collection: Collection,
        embedder: Embedder,
        where: str,
        rebuilt: bool,
        embedded_count: int,
    ) -> None:
        self.where = where
        # True when this open (re)built the Chroma collection; False when it reused it.
        self.rebuilt = rebuilt
        self.embedded_count = embedded_count
        self._collection = collection
        self._embedder = embedder
        self._patients = list(patients.values())
        self._position = {p.patient_id: i for i, p in enumerate(self._patients)}
        self._ages = np.array([p.age for p in self._patients], dtype=np.int16)
        self._risks = np.array([p.risk_score for p in self._patients], dtype=np.float64)
        genders = [p.gender.lower() for p in self._patients]
        self._gender_codes = {g: i for i, g in enumerate(dict.fromkeys(genders))}
        self._genders = np.array([self._gender_codes[g] for g in genders], dtype=np.int16)
        self._build_term_index()
        self._query_vector = lru_cache(maxsize=512)(self._embed_query)

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
        """Reuse the collection for this exact file content, or rebuild it; then index terms."""
        if not patients:
            raise SearchError("there are no patients to index")
        data_path = Path(data_path).resolve()
        try:
            data_hash = file_hash(data_path)
        except OSError as exc:
            raise SearchError(f"cannot read the data file {data_path}: {exc}") from None
        if embedder is None:
            from clinsum.embeddings import load_embedder

            embedder = load_embedder()
        client, where = _connect(data_path, chroma_url)
        # One collection per data file path, so two files on one server never share one.
        name = "patients-" + hashlib.sha256(str(data_path).encode()).hexdigest()[:24]
        metadata = {
            "data_path": str(data_path),
            "data_hash": data_hash,
            "model": embedder.name,
            "index_version": INDEX_VERSION,
            "count": len(patients),
        }
        try:
            collection = cls._reusable(client, name, metadata)
            embedded = 0
            if collection is None:
                collection, embedded = cls._build(
                    client, name, metadata, patients, embedder, show_progress
                )
        except SearchError:
            raise
        except Exception as exc:
            raise SearchUnavailable(f"the search index in {where} failed: {exc}") from None
        log.info(
            "%s index for %s (%d patients) in %s",
            "Built" if embedded else "Reused",
            data_path.name,
            len(patients),
            where,
        )
        return cls(patients, collection, embedder, where, bool(embedded), embedded)

    @staticmethod
    def _reusable(client: ClientAPI, name: str, metadata: Mapping[str, Any]) -> Collection | None:
        from chromadb.errors import NotFoundError

        try:
            collection = client.get_collection(name, embedding_function=None)
        except NotFoundError:
            return None
        current = collection.metadata or {}
        fresh = all(current.get(k) == v for k, v in metadata.items())
        return collection if fresh and collection.count() == metadata["count"] else None

    @staticmethod
    def _build(
        client: ClientAPI,
        name: str,
        metadata: Mapping[str, Any],
        patients: Mapping[int, Patient],
        embedder: Embedder,
        show_progress: bool,
    ) -> tuple[Collection, int]:
        """Embed every patient into a fresh collection; the hash is stored only at the end,
        so an interrupted build is never mistaken for a complete one."""
        from chromadb.errors import NotFoundError
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with contextlib.suppress(NotFoundError):
            client.delete_collection(name)
        collection = client.create_collection(
            name,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={**metadata, "data_hash": "incomplete"},
            embedding_function=None,
        )
        rows = list(patients.values())
        chunk = max(1, min(EMBED_CHUNK, client.get_max_batch_size()))
        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not show_progress,
            transient=True,
        )
        with progress:
            task = progress.add_task("Embedding patients", total=len(rows))
            for start in range(0, len(rows), chunk):
                batch = rows[start : start + chunk]
                documents = [_document(p) for p in batch]
                collection.add(
                    ids=[str(p.patient_id) for p in batch],
                    embeddings=embedder.encode(documents),
                    metadatas=[
                        {"age": p.age, "gender": p.gender.lower(), "risk": p.risk_score}
                        for p in batch
                    ],
                    documents=documents,
                )
                progress.advance(task, len(batch))
        collection.modify(metadata=dict(metadata))
        return collection, len(rows)

    def _build_term_index(self) -> None:
        """concept -> (positions, scores) of the patients naming it, so that a query costs a
        few array operations instead of a loop over patients.

        Records are cut into items (list entries, note sentences) and those repeat: 100,000
        generated patients have ~2,300 distinct items. So concepts are found once per item and
        numpy spreads them to the patients; a Python loop per patient and concept took ~25 s.
        """
        n = len(self._patients)
        item_ids: dict[tuple[int, str], int] = {}
        cell_items: dict[tuple[int, str], list[int]] = {}
        occurrence_item: list[int] = []
        occurrence_position: list[int] = []
        names: dict[str, list[int]] = {}
        for i, patient in enumerate(self._patients):
            before = len(occurrence_item)
            for cell in _cells(patient):
                ids = cell_items.get(cell)
                if ids is None:
                    ids = cell_items[cell] = [
                        item_ids.setdefault((cell[0], item), len(item_ids))
                        for item in _items(cell[1])
                    ]
                occurrence_item.extend(ids)
            occurrence_position.extend(itertools.repeat(i, len(occurrence_item) - before))
            for word in _words(patient.name):
                names.setdefault(word, []).append(i)
        self._names = {w: np.array(p, dtype=np.int64) for w, p in names.items()}

        # Item -> sorted positions of the patients who have it, as one array plus bounds.
        keys = np.array(occurrence_item, dtype=np.int64) * n + np.array(
            occurrence_position, dtype=np.int64
        )
        keys.sort()
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys
        self._item_positions = keys % n
        self._item_bounds = np.searchsorted(keys // n, np.arange(len(item_ids) + 1))

        concept_items: dict[str, dict[int, int]] = {}
        self._word_items: dict[str, list[int]] = {}
        for (field, item), item_id in item_ids.items():
            for concept, bit, _ in _item_evidence(field, item):
                masks = concept_items.setdefault(concept, {})
                masks[item_id] = masks.get(item_id, 0) | 1 << bit
            for word in _words(item):
                self._word_items.setdefault(word, []).append(item_id)
        self._word_cache: dict[str, np.ndarray] = {}
        self._postings = {concept: self._spread(masks) for concept, masks in concept_items.items()}

    def _patients_with(self, item_id: int) -> np.ndarray:
        return self._item_positions[self._item_bounds[item_id] : self._item_bounds[item_id + 1]]

    def _spread(self, item_masks: Mapping[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores) for a concept from the evidence bits of the items naming it."""
        parts = [self._patients_with(item) for item in item_masks]
        positions = np.concatenate(parts)
        masks = np.repeat(list(item_masks.values()), [len(p) for p in parts])
        order = np.argsort(positions, kind="stable")
        positions, masks = positions[order], masks[order]
        first = np.flatnonzero(np.r_[True, positions[1:] != positions[:-1]])
        # A patient naming the concept in several fields: OR the bits, then score once.
        return positions[first], _SCORES[np.bitwise_or.reduceat(masks, first)]

    def _word_positions(self, word: str) -> np.ndarray | None:
        """Patients whose record has `word`; worked out on first use, since few words are ever
        searched for literally and indexing them all at open cost seconds."""
        found = self._word_cache.get(word)
        if found is None and word in self._word_items:
            parts = [self._patients_with(item) for item in self._word_items[word]]
            found = self._word_cache[word] = np.unique(np.concatenate(parts))
        return found

    def _embed_query(self, query: str) -> tuple[float, ...]:
        return tuple(self._embedder.encode([query])[0])

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

    def _nearest(
        self, query: str, n_results: int, where: dict[str, Any] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Positions and cosine similarities of the patients nearest to the query."""
        try:
            result = self._collection.query(
                query_embeddings=[list(self._query_vector(query))],
                n_results=n_results,
                where=where,
                include=["distances"],
            )
        except Exception as exc:
            raise SearchUnavailable(f"the search index in {self.where} failed: {exc}") from None
        pairs = [
            (self._position[int(i)], d)
            for i, d in zip(result["ids"][0], (result["distances"] or [[]])[0], strict=True)
            if int(i) in self._position
        ]
        positions = np.array([p for p, _ in pairs], dtype=np.int64)
        return positions, 1.0 - np.array([d for _, d in pairs], dtype=np.float64)

    def search(self, query: str, top_k: int = 5, filters: dict | None = None) -> list[Hit]:
        """Best `top_k` patients for `query`; safe to call from several threads at once."""
        text = _check_query(query, top_k)
        wanted = _check_filters(filters)
        concepts = find_concepts(text)
        consumed = set().union(*(_words(p) for p in concepts.values()))
        literal = [
            w
            for w in dict.fromkeys(_WORD.findall(text.lower()))
            if w not in STOPWORDS and w not in consumed and len(w) >= 2
        ]

        terms = np.zeros(len(self._patients), dtype=np.float64)
        for concept in concepts:
            if concept in self._postings:
                positions, scores = self._postings[concept]
                terms[positions] += scores
        for word in literal:
            if word in self._names:
                terms[self._names[word]] += NAME_WORD_WEIGHT
            positions = self._word_positions(word)
            if positions is not None:
                terms[positions] += TEXT_WORD_WEIGHT
        term_hits = np.flatnonzero(terms)
        term_hits = term_hits[self._eligible(term_hits, wanted)]

        total = len(self._patients)
        pool = min(total, VECTOR_POOL + 10 * top_k)
        near, similarity = self._nearest(text, pool, None)
        # Patients the vector search did not return are at most as similar as the last one.
        floor = float(similarity.min()) if len(similarity) else 0.0
        keep = self._eligible(near, wanted)
        near, similarity = near[keep], similarity[keep]
        if not concepts and pool < total and len(np.union1d(term_hits, near)) < top_k:
            # Selective filters left too few of the pool: let Chroma filter (slower, exact).
            near, similarity = self._nearest(text, top_k, _chroma_where(wanted))

        combined = terms.copy()
        combined[term_hits] += floor
        combined[near] = terms[near] + similarity
        # A query naming a condition, symptom or drug gets only patients with evidence, maybe
        # none: padding the list with records that merely sound similar would present, say, a
        # COPD patient as an answer to "asthma".
        candidates = term_hits if concepts else np.union1d(term_hits, near)
        if len(candidates) > top_k:
            cutoff = np.partition(combined[candidates], -top_k)[-top_k]
            candidates = candidates[combined[candidates] >= cutoff]
        order = np.lexsort((candidates, -combined[candidates]))[:top_k]
        return [
            self._hit(int(candidates[j]), float(combined[candidates[j]]), concepts, literal)
            for j in order
        ]

    def _hit(
        self, position: int, score: float, concepts: Mapping[str, str], literal: list[str]
    ) -> Hit:
        """The hit with `matched` saying, strongest first, which words in which fields counted."""
        patient = self._patients[position]
        cells = _cells(patient)
        evidence: dict[str, tuple[int, str]] = {}
        for field, text in cells:
            for item in _items(text):
                for concept, bit, shown in _item_evidence(field, item):
                    if concept in concepts:
                        evidence.setdefault(shown, (bit, shown))
        matched = [
            shown for _, shown in sorted(evidence.values(), key=lambda e: -BIT_WEIGHTS[e[0]])
        ]
        for word in literal:
            if word in _words(patient.name):
                matched.append(f"{word} (name)")
            matched += [
                f"{word} ({FIELDS[field]})" for field, text in cells if word in _words(text)
            ]
        return Hit(
            patient_id=patient.patient_id,
            name=patient.name,
            age=patient.age,
            gender=patient.gender,
            score=round(score, 4),
            matched=list(dict.fromkeys(matched)) or ["similar wording"],
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m clinsum.search",
        description="Build (or check) the search index for a patients file; optionally query it.",
    )
    parser.add_argument("--data", default="patient_data.csv", help="patients CSV file")
    parser.add_argument("--chroma-url", help="use a Chroma server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--query", help="run one search and print the hits")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    logs.setup("info")
    try:
        patients = load_patients(args.data)
        index = PatientIndex.open(patients, args.data, chroma_url=args.chroma_url)
        hits = index.search(args.query, args.top_k) if args.query else []
    except (RecordError, SearchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for hit in hits:
        print(f"{hit.score:7.3f}  #{hit.patient_id:<6} {hit.name:<24} {'; '.join(hit.matched)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
