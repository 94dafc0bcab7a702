"""Where a domain's records come from: local files (JSONL, JSON, CSV, Parquet) or a Hugging Face dataset.

Readers return plain lists of dicts; `map_fields` renames a source's fields to ours (`id`, `prompt`,
`answer`, ...) and `sample` draws a seeded subset. Every problem with the data is a `DataError` whose
message names the file or dataset, and the line or record, at fault.

Size limits keep a bad file from exhausting memory: no record may be larger than `MAX_RECORD_BYTES`
(JSONL and CSV are read in bounded chunks, so an over-long line is refused without being read
whole), and a `.json` file, which must be parsed whole, no larger than `MAX_JSON_BYTES`.

(Over 300 lines, one job: turning any source into checked records; each reader is a few lines, and what
makes the module long is the bounded reading and the errors that name the file and line.)
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import random
from pathlib import Path
from typing import Any, Iterator

from thinkswitch.errors import DataError
from thinkswitch.store.io import iter_jsonl, json_type, lines

log = logging.getLogger(__name__)

READERS = (".jsonl", ".json", ".csv", ".parquet")
_HF_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")

# The largest record accepted: 1 MiB, as the bytes of a JSONL/CSV line (or the text a record holds,
# in other formats). About 250k tokens: longer than any prompt a model here can take, so a larger
# record is a broken file (a dump on one line), and refusing it beats running out of memory later.
MAX_RECORD_BYTES = 1 << 20
# The largest `.json` file accepted: 1 GiB. A JSON file is parsed whole, and Python holds it as
# text plus objects, about 3-4x its size at the peak; 1 GiB is far beyond any evaluation or
# prompt set (PubMedQA's labelled set is 2.5 MB). Larger data belongs in JSONL or Parquet.
MAX_JSON_BYTES = 1 << 30


class Record(dict):
    """A record (a plain dict to everything that reads it) that also knows where it was read:
    `origin` is `<file>:<line>`, `<file>: record <i or key>`, `<file>: row <i>` or `dataset ...: row <i>`."""

    __slots__ = ("origin",)

    def __init__(self, data: Any = (), origin: str | None = None):
        super().__init__(data)
        self.origin = origin


def origin(record: Any) -> str | None:
    """Where a record was read (see `Record`), or None for a plain dict."""
    return getattr(record, "origin", None)


def read_records(path: str | Path) -> list[dict]:
    """All records of a local data file, read by its extension (one of `READERS`)."""
    return read_located(path)[0]


def read_located(path: str | Path) -> tuple[list[dict], list[str]]:
    """(records, where each one is): `file:line` for JSONL and CSV, `file: record k` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: does not exist" if not path.exists() else f"{path}: is not a file")
    suffix = path.suffix.lower()
    reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}.get(suffix)
    if reader is None:
        raise DataError(f"{path}: unknown extension {suffix or '(none)'!r}; supported: {', '.join(READERS)}")
    try:
        records, places = reader(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if reader in (_read_json, _read_parquet):  # JSONL and CSV lines were bounded as they were read
        check_record_sizes(records, places)
    log.debug("read %d records from %s", len(records), path)
    return [Record(r, where) for r, where in zip(records, places)], places


def _too_large(where: str, what: str = "record") -> DataError:
    return DataError(f"{where}: {what} larger than {MAX_RECORD_BYTES:,} bytes "
                     "(thinkswitch.data.sources.MAX_RECORD_BYTES); no prompt is that long: "
                     "is the file broken (everything on one line)?")


_HINT = (" (thinkswitch.data.sources.MAX_RECORD_BYTES); no prompt is that long: is the file broken (everything on "
         "one line)?")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Lines of a data file, each at most `MAX_RECORD_BYTES` (refused at its line without being read whole)."""
    return lines(path, MAX_RECORD_BYTES, _HINT)


def _read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    records, places = [], []
    for lineno, obj in iter_jsonl(path, MAX_RECORD_BYTES, _HINT):
        records.append(obj)
        places.append(f"{path}:{lineno}")
    return records, places


def load_json(path: Path) -> Any:
    """A JSON file's content; a DataError naming the file and line when it is not valid JSON, or
    when it is larger than `MAX_JSON_BYTES`."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise DataError(f"{path}: {size:,} bytes, larger than a JSON file may be ({MAX_JSON_BYTES:,}, "
                        "thinkswitch.data.sources.MAX_JSON_BYTES: it is parsed whole); use JSONL or Parquet")
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _read_json(path: Path) -> tuple[list[dict], list[str]]:
    data = load_json(path)
    if isinstance(data, list):
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise DataError(f"{path}: record {i} is not an object (got {json_type(obj)})")
        return data, [f"{path}: record {i}" for i in range(len(data))]
    if isinstance(data, dict):  # keyed by id
        records = []
        for key, obj in data.items():
            if not isinstance(obj, dict):
                raise DataError(f"{path}: record {key!r} is not an object (got {json_type(obj)}); expected a list "
                                "of objects or an object whose values are objects keyed by id")
            records.append(obj if "id" in obj else {"id": key, **obj})
        return records, [f"{path}: record {key!r}" for key in data]
    raise DataError(f"{path}: expected a list of objects or an object keyed by id, got {json_type(data)}")


def _read_csv(path: Path) -> tuple[list[dict], list[str]]:
    """Rows as dicts keyed by the header (the first non-blank row); blank lines are skipped. A row
    must have exactly the header's number of fields, and no record may exceed `MAX_RECORD_BYTES`."""
    pending = 0  # characters of the record being read (a quoted field may span lines)

    def lines() -> Iterator[str]:
        nonlocal pending
        for lineno, text in _lines(path):
            pending += len(text)
            if pending > MAX_RECORD_BYTES:
                raise _too_large(f"{path}:{lineno}")
            yield text

    reader = csv.reader(lines())
    header: list[str] | None = None
    records, places = [], []
    with _csv_field_limit(MAX_RECORD_BYTES):
        try:
            for row in reader:
                pending = 0
                if not row:
                    continue
                if header is None:
                    dup = next((c for i, c in enumerate(row) if c in row[:i]), None)
                    if dup is not None:
                        raise DataError(f"{path}:{reader.line_num}: column {dup!r} appears twice in the header")
                    header = row
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}:{reader.line_num}: {len(row)} field{'s' * (len(row) != 1)}, but the "
                                    f"header has {len(header)} ({', '.join(header)})")
                records.append(dict(zip(header, row)))
                places.append(f"{path}:{reader.line_num}")
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    return records, places


@contextlib.contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """The csv module's field size limit (128 KiB by default, process-wide) raised for one read."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, limit))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _read_parquet(path: Path) -> tuple[list[dict], list[str]]:
    records = _parquet_rows(path)
    return records, [f"{path}: row {i}" for i in range(len(records))]


def _parquet_rows(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    try:
        if pq is not None:
            return pq.read_table(path).to_pylist()
        try:
            import pandas as pd
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow) or pandas with "
                            "a Parquet engine") from None
        frame = pd.read_parquet(path)
        return [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items()}
                for row in frame.to_dict(orient="records")]
    except DataError:
        raise
    except ImportError as e:  # pandas without a Parquet engine
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow): {e}") from None
    except Exception as e:  # a corrupt or non-Parquet file
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from e


def check_record_sizes(records: list[dict], places: list[str]) -> None:
    """A DataError naming the first record larger than `MAX_RECORD_BYTES` (the text it holds)."""
    for record, place in zip(records, places):
        if _text_size(record, MAX_RECORD_BYTES) > MAX_RECORD_BYTES:
            raise _too_large(place)


def _text_size(value: Any, limit: int) -> int:
    """About how many characters `value` holds as text (stops counting past `limit`)."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    items = value.items() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else None
    if items is None:
        return 8
    total = 0
    for item in items:
        total += _text_size(item, limit)
        if total > limit:
            break
    return total


def read_ids(path: str | Path, key: str) -> set[str]:
    """The ids in an id-list file (`key` names the setting): a JSON list of ids (strings or
    integers), or an object whose keys are the ids."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{key}: {p} {'is not a file' if p.exists() else 'does not exist'} (an id list)")
    try:
        data = load_json(p)
    except DataError as e:
        raise DataError(f"{key}: {e}") from None
    if isinstance(data, dict):
        return set(data)
    if not isinstance(data, list):
        raise DataError(f"{key}: {p}: expected a list of ids or an object keyed by id, got {json_type(data)}")
    for i, item in enumerate(data):
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise DataError(f"{key}: {p}: item {i} is {json_type(item)}, not an id (a string or an integer)")
    return {str(i) for i in data}


def check_unique_ids(rows: list[dict], places: list[str], source: str) -> None:
    """A DataError naming a duplicate id and where both records are (duplicates would be pooled)."""
    first: dict[str, str] = {}
    dups = []
    for row, place in zip(rows, places):
        if row["id"] in first:
            dups.append((row["id"], first[row["id"]], place))
        else:
            first[row["id"]] = place
    if dups:
        rid, a, b = dups[0]
        more = f" (and {len(dups) - 1} more duplicate{'s' * (len(dups) > 2)})" if len(dups) > 1 else ""
        raise DataError(f"{source}: id {rid!r} appears twice, at {a} and at {b}{more}; ids must be unique "
                        "(map `id` to a unique field in the fields mapping, or remove the duplicates)")


def load_hf(dataset: str, config: str | None, split: str, revision: str | None = None,
            key: str = "dataset") -> list[dict]:
    """One split of a Hugging Face dataset as a list of dicts.

    `dataset` is a hub id, resolved to the split's data files in the hub cache (`thinkswitch.hub.dataset_files`:
    downloaded once, or read from the cache offline) and read by `datasets`' builder for them; or a local
    directory: one written by `save_to_disk` (then `config` and `revision` are not used, and `split` picks the
    split of a saved `DatasetDict`), or a dataset repo's files.
    """
    where = f"dataset {dataset!r} (config {config!r}, split {split!r})"
    try:
        import datasets
    except ImportError:
        raise DataError(f"{where}: loading a Hugging Face dataset needs `datasets` (pip install datasets)") from None
    if not Path(dataset).expanduser().is_dir():
        from thinkswitch.hub import dataset_files

        builder, files = dataset_files(dataset, config, split, revision, key)
    try:
        if _is_saved_dataset(dataset):
            loaded = datasets.load_from_disk(dataset)
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(f"{where}: no split {split!r}; it has {sorted(loaded)}")
                loaded = loaded[split]
        elif Path(dataset).expanduser().is_dir():
            loaded = datasets.load_dataset(str(Path(dataset).expanduser()), config, split=split)
        else:
            loaded = datasets.load_dataset(builder, data_files={split: files}, split=split)
        records = loaded.to_list()
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{where}: could not load ({type(e).__name__}: {e})") from e
    places = [f"{where}: row {i}" for i in range(len(records))]
    check_record_sizes(records, places)
    log.debug("loaded %d records from %s", len(records), where)
    return [Record(r, place) for r, place in zip(records, places)]


def _is_saved_dataset(dataset: str) -> bool:
    path = Path(dataset)
    return path.is_dir() and any((path / name).is_file() for name in _HF_SAVED_MARKERS)


def map_fields(records: list[dict], fields: dict[str, str], source: str,
               places: list[str] | None = None) -> list[dict]:
    """Records with only our fields: `fields` maps our name to the record's (`a.b` reaches into `a`).

    Every output record has an `id` (a string): the mapped field, else the record's own `id`, else its index.
    Values are kept as they are (lists stay lists). An error names the record by where it was read: its
    `places` entry (`file:line`, 1-based, for JSONL and CSV), its origin, else its index in `records`.
    """
    out = []
    for i, record in enumerate(records):
        where = origin(record) or (places[i] if places else f"record {i}")
        if not isinstance(record, dict):
            raise DataError(f"{source}: {where} is not an object (got {type(record).__name__})")
        row = {}
        for ours, theirs in fields.items():
            found, value = _lookup(record, theirs)
            if not found:
                raise DataError(f"{source}: {where}{_id_note(record, fields)} has no field {theirs!r} "
                                f"(for {ours!r}); {value}")
            row[ours] = value
        raw_id = row["id"] if "id" in row else record.get("id", i)
        out.append(Record({"id": str(raw_id), **{k: v for k, v in row.items() if k != "id"}},
                          origin(record) or (places[i] if places else f"{source}: record {i}")))
    return out


def _lookup(record: dict, name: str) -> tuple[bool, Any]:
    """(True, value), or (False, why not). A key that itself contains dots wins over nesting."""
    if name in record:
        return True, record[name]
    value: Any = record
    walked = []
    for part in name.split("."):
        if not isinstance(value, dict):
            return False, f"{'.'.join(walked)!r} is {type(value).__name__}, not an object"
        if part not in value:
            where = f"{'.'.join(walked)!r} has" if walked else "available"
            return False, f"{where}: {sorted(map(str, value))}"
        value = value[part]
        walked.append(part)
    return True, value


def _id_note(record: dict, fields: dict[str, str]) -> str:
    found, value = _lookup(record, fields["id"]) if "id" in fields else ("id" in record, record.get("id"))
    return f" (id {str(value)!r})" if found else ""


def sample(records: list[dict], n: int, seed: int, source: str) -> list[dict]:
    """`n` records drawn without replacement by `random.Random(seed)` (in the draw's order)."""
    if n < 0:
        raise DataError(f"{source}: asked for {n} records")
    if n > len(records):
        raise DataError(f"{source}: asked for {n} records, it holds {len(records)}")
    return random.Random(seed).sample(records, n)
