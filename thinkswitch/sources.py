"""Where a domain's records come from: local files (JSONL, JSON, CSV, Parquet) or a Hugging Face dataset.

Readers return plain lists of dicts; `map_fields` renames a source's fields to ours (`id`, `prompt`,
`answer`, ...) and `sample` draws a seeded subset. Every problem with the data is a `DataError` whose
message names the file or dataset, and the line or record, at fault.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

READERS = (".jsonl", ".json", ".csv", ".parquet")
_HF_SAVED_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


class DataError(ValueError):
    """A data file or dataset that cannot be read, or records that do not have the fields asked for."""


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
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: does not exist" if not path.exists() else f"{path}: is not a file")
    suffix = path.suffix.lower()
    reader = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}.get(suffix)
    if reader is None:
        raise DataError(f"{path}: unknown extension {suffix or '(none)'!r}; supported: {', '.join(READERS)}")
    try:
        records = reader(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    log.debug("read %d records from %s", len(records), path)
    return records


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {_json_type(obj)}")
            records.append(Record(obj, f"{path}:{lineno}"))
    return records


def load_json(path: Path) -> Any:
    """A JSON file's content; a DataError naming the file and line when it is not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _read_json(path: Path) -> list[dict]:
    data = load_json(path)
    if isinstance(data, list):
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise DataError(f"{path}: record {i} is not an object (got {_json_type(obj)})")
        return [Record(obj, f"{path}: record {i}") for i, obj in enumerate(data)]
    if isinstance(data, dict):  # keyed by id
        records = []
        for key, obj in data.items():
            if not isinstance(obj, dict):
                raise DataError(f"{path}: record {key!r} is not an object (got {_json_type(obj)}); expected a list "
                                "of objects or an object whose values are objects keyed by id")
            records.append(Record(obj if "id" in obj else {"id": key, **obj}, f"{path}: record {key!r}"))
        return records
    raise DataError(f"{path}: expected a list of objects or an object keyed by id, got {_json_type(data)}")


def _read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        records = []
        try:
            for row in reader:
                if None in row:  # more cells than the header has columns
                    raise DataError(f"{path}:{reader.line_num}: more fields than the header's {len(reader.fieldnames)}")
                records.append(Record(row, f"{path}:{reader.line_num}"))
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: not valid CSV ({e})") from None
    return records


def _read_parquet(path: Path) -> list[dict]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    try:
        if pq is not None:
            return [Record(r, f"{path}: row {i}") for i, r in enumerate(pq.read_table(path).to_pylist())]
        try:
            import pandas as pd
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow) or pandas with "
                            "a Parquet engine") from None
        frame = pd.read_parquet(path)
        return [Record({k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items()}, f"{path}: row {i}")
                for i, row in enumerate(frame.to_dict(orient="records"))]
    except DataError:
        raise
    except ImportError as e:  # pandas without a Parquet engine
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow): {e}") from None
    except Exception as e:  # a corrupt or non-Parquet file
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from e


def _json_type(obj: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(obj), "a number")


def load_hf(dataset: str, config: str | None, split: str, revision: str | None = None) -> list[dict]:
    """One split of a Hugging Face dataset as a list of dicts.

    `dataset` is a hub id, or a local directory written by `save_to_disk` (then `config` and `revision`
    are not used, and `split` picks the split of a saved `DatasetDict`).
    """
    where = f"dataset {dataset!r} (config {config!r}, split {split!r})"
    try:
        import datasets
    except ImportError:
        raise DataError(f"{where}: loading a Hugging Face dataset needs `datasets` (pip install datasets)") from None
    try:
        if _is_saved_dataset(dataset):
            loaded = datasets.load_from_disk(dataset)
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise DataError(f"{where}: no split {split!r}; it has {sorted(loaded)}")
                loaded = loaded[split]
        else:
            loaded = datasets.load_dataset(dataset, config, split=split, revision=revision)
        records = [Record(r, f"{where}: row {i}") for i, r in enumerate(loaded.to_list())]
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{where}: could not load ({type(e).__name__}: {e})") from e
    log.debug("loaded %d records from %s", len(records), where)
    return records


def _is_saved_dataset(dataset: str) -> bool:
    path = Path(dataset)
    return path.is_dir() and any((path / name).is_file() for name in _HF_SAVED_MARKERS)


def map_fields(records: list[dict], fields: dict[str, str], source: str) -> list[dict]:
    """Records with only our fields: `fields` maps our name to the record's (`a.b` reaches into `a`).

    Every output record has an `id` (a string): the mapped field, else the record's own `id`, else its index.
    Values are kept as they are (lists stay lists).
    """
    out = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{source}: record {i} is not an object (got {type(record).__name__})")
        row = {}
        for ours, theirs in fields.items():
            found, value = _lookup(record, theirs)
            if not found:
                raise DataError(f"{source}: record {i}{_id_note(record, fields)} has no field {theirs!r} "
                                f"(for {ours!r}); {value}")
            row[ours] = value
        raw_id = row["id"] if "id" in row else record.get("id", i)
        out.append(Record({"id": str(raw_id), **{k: v for k, v in row.items() if k != "id"}},
                          origin(record) or f"{source}: record {i}"))
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
