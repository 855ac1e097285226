"""The validated-records cache (clinsum/records/cache.py): the same patients as validating the
file, taken from the cache only while the file and the loader's code are unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from clinsum.records import Loaded, RecordError, cache, formats

REPO = Path(__file__).resolve().parent.parent
ORIGINAL = REPO / "tests" / "data" / "original"
FILES = [
    REPO / "patient_data.csv",
    REPO / "tests" / "data" / "synthea_patients.csv",
    ORIGINAL / "patients_data.csv",
    ORIGINAL / "patients_data.json",
    ORIGINAL / "patients_detailed.csv",
]


@pytest.fixture(params=["in-process", "child"])
def where(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Validate in this process (small files), or in a child (large ones): both must agree."""
    if request.param == "child":
        monkeypatch.setattr(cache, "CHILD_ABOVE_BYTES", -1)
    return request.param


def copy(source: Path, folder: Path) -> Path:
    target = folder / source.name
    shutil.copy(source, target)
    return target


def refuse_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(path: object) -> None:
        raise AssertionError("validated the file again instead of reading the cache")

    monkeypatch.setattr(cache.formats, "load", fail)


@pytest.mark.parametrize("source", FILES, ids=lambda p: p.name)
def test_the_cache_gives_exactly_what_validation_gives(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Every shape (ours, Synthea, the original's three), every field and extra visit key,
    the scale and the log notes. Mutation caught: a field dropped or re-typed in the cache."""
    path = copy(source, tmp_path)
    expected = formats.load(path)
    first = cache.load(path)  # validates and writes the cache
    assert cache.cache_path(path).stat().st_mode & 0o777 == 0o600  # patient data
    refuse_validation(monkeypatch)
    cached = cache.load(path)
    assert cached.patients == expected.patients == first.patients
    assert list(cached.patients) == list(expected.patients)  # file order kept
    assert (cached.kind, cached.scale, cached.notes) == (
        expected.kind,
        expected.scale,
        expected.notes,
    )


def test_csv_and_json_of_one_stem_keep_separate_caches(tmp_path: Path) -> None:
    csv_path = copy(ORIGINAL / "patients_data.csv", tmp_path)
    json_path = copy(ORIGINAL / "patients_data.json", tmp_path)
    assert cache.cache_path(csv_path) != cache.cache_path(json_path)
    assert cache.load(csv_path).kind != cache.load(json_path).kind


def test_an_edited_file_is_validated_again(tmp_path: Path, where: str) -> None:
    """Mutation caught: the cache keyed by the file's name or mtime instead of its bytes."""
    path = copy(REPO / "patient_data.csv", tmp_path)
    before = cache.load(path).patients[1].name
    path.write_text(path.read_text().replace(before, "Zelda Quint", 1))
    assert cache.load(path).patients[1].name == "Zelda Quint"
    path.write_text(path.read_text().replace("Zelda Quint", "Zelda Quint,", 1))
    with pytest.raises(RecordError) as refused:  # a bad edit is refused, not served from cache
        cache.load(path)
    with pytest.raises(RecordError) as validated:  # with the validator's own words
        formats.load(path)
    assert str(refused.value) == str(validated.value)


def test_new_loader_rules_are_applied_to_a_cached_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = copy(REPO / "patient_data.csv", tmp_path)
    cache.load(path)
    calls: list[Path] = []
    real = formats.load

    def counting(p: Path) -> Loaded:
        calls.append(p)
        return real(p)

    monkeypatch.setattr(cache.formats, "load", counting)
    monkeypatch.setattr(cache, "_fingerprint", lambda: "other rules")
    cache.load(path)
    assert calls == [path]


@pytest.mark.parametrize(
    "damage", [b"", b"{", b'{"key": 1}', b"[]", b'{"key": null, "patients": 3}']
)
def test_a_damaged_cache_is_rebuilt(tmp_path: Path, damage: bytes) -> None:
    path = copy(ORIGINAL / "patients_detailed.csv", tmp_path)
    expected = cache.load(path).patients
    cache_file = cache.cache_path(path)
    cache_file.write_bytes(damage)
    assert cache.load(path).patients == expected
    assert cache_file.read_bytes() != damage


def test_a_read_only_folder_still_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    path = copy(REPO / "tests" / "data" / "synthea_patients.csv", tmp_path)

    def no_room(*args: object, **kwargs: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache.os, "open", no_room)
    assert len(cache.load(path).patients) == 59
    assert not cache.cache_path(path).exists()


@pytest.mark.parametrize("name", ["missing.csv", "folder"])
def test_a_file_that_cannot_be_read_is_the_loaders_clear_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(RecordError, match=r"not found|not a file|no FHIR files in this folder"):
        cache.load(tmp_path / name)


def test_a_cache_cut_short_is_rebuilt(tmp_path: Path) -> None:
    """A header that promises more rows than the file holds (a disk filled mid-write by
    another tool, a copy cut short) is not served: patients past the cut would be lost."""
    path = copy(REPO / "patient_data.csv", tmp_path)
    expected = cache.load(path).patients
    cache_file = cache.cache_path(path)
    whole = cache_file.read_bytes()
    cache_file.write_bytes(whole[:-500])
    assert cache.load(path).patients == expected
    assert cache_file.read_bytes() == whole


def test_start_up_decodes_no_patient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What start-up at 100,000 patients relies on (3.9 s and ~400 MiB as objects): reading
    the cache, opening the search index and building the app decode nobody; a search decodes
    only its hits, and a fetch only its patient."""
    from clinsum.app import App
    from clinsum.embeddings import load_embedder
    from clinsum.search import PatientIndex
    from clinsum.store import SummaryStore

    from .scripted import ScriptedBackend

    path = copy(REPO / "patient_data.csv", tmp_path)
    cache.load(path)
    embedder = load_embedder()
    PatientIndex.open(cache.load(path).patients, path, embedder=embedder)  # the index
    decoded: list[int] = []
    real = cache.Records.at

    def counting(self: cache.Records, position: int) -> object:
        decoded.append(position)
        return real(self, position)

    monkeypatch.setattr(cache.Records, "at", counting)
    patients = cache.load(path).patients
    index = PatientIndex.open(patients, path, embedder=embedder, show_progress=False)
    app = App(patients, index, ScriptedBackend([]), SummaryStore(tmp_path / "s.csv"))
    assert decoded == []
    assert len(app.known_names) == len(patients) == 100
    hits = index.search("diabetes", 3)
    assert len(decoded) == len(hits) == 3
    assert app.patient(hits[0].patient_id).name == hits[0].name
    assert len(decoded) == 4


def test_records_behave_as_the_mapping_they_replace(tmp_path: Path) -> None:
    path = copy(ORIGINAL / "patients_data.json", tmp_path)
    validated = formats.load(path).patients
    records = cache.load(path).patients
    assert isinstance(records, cache.Records)
    assert cache.Records.of(records) is records
    assert records == validated and dict(records) == validated
    assert list(records) == list(validated) and len(records) == len(validated)
    first = next(iter(validated))
    assert first in records and 10**9 not in records and "1" not in records
    with pytest.raises(KeyError):
        records[10**9]
    assert records.names == [p.name for p in validated.values()]
    assert records.scale == 10.0 and records[first].score_scale == 10.0


def test_a_large_file_is_validated_in_a_child_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The memory validation takes (~600 MiB at 100,000 patients) is the child's, returned
    when it exits: this process never runs the validator for a large file."""
    monkeypatch.setattr(cache, "CHILD_ABOVE_BYTES", 1000)
    path = copy(REPO / "tests" / "data" / "synthea_patients.csv", tmp_path)
    expected = formats.load(path).patients
    refuse_validation(monkeypatch)
    assert cache.load(path).patients == expected
    assert cache.cache_path(path).stat().st_mode & 0o777 == 0o600
    assert cache.load(path).patients == expected  # and from the cache it wrote


def test_a_child_that_dies_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed (say, by the OOM killer): the message names the file and the exit status."""
    monkeypatch.setattr(cache, "CHILD_ABOVE_BYTES", -1)
    path = copy(ORIGINAL / "patients_detailed.csv", tmp_path)
    monkeypatch.setattr(cache.sys, "executable", "/bin/false")
    with pytest.raises(RecordError, match=r"validating .*patients_detailed.csv failed \(exit"):
        cache.load(path)


def test_the_child_reports_a_vanished_file_in_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deleted between the server's look and the child's read: a message, not a traceback."""
    assert cache.main([str(tmp_path / "gone.csv")]) == cache.INVALID_EXIT
    assert capsys.readouterr().out.startswith(f"cannot read the patient data file {tmp_path}")


def test_the_index_is_keyed_by_the_records_hash_without_reading_the_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 MB at 100,000 patients: hashed once at start-up, by the records cache."""
    from clinsum import search
    from clinsum.embeddings import load_embedder
    from clinsum.records import file_hash

    path = copy(REPO / "patient_data.csv", tmp_path)
    records = cache.load(path).patients
    assert records.source_sha256 == file_hash(path)

    def no_second_read(p: object) -> str:
        raise AssertionError("hashed the data file again")

    monkeypatch.setattr(search, "source_hash", no_second_read)
    index = search.PatientIndex.open(records, path, embedder=load_embedder(), show_progress=False)
    assert index.search("diabetes", 1)
    assert cache.Records.of(formats.load(path).patients).source_sha256 is None
