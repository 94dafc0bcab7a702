"""Reading records: the real evaluation data in ../shared/data, and small files written to tmp_path."""

import csv
import json
import sys
import tracemalloc

import pytest

from tests.support.paths import SHARED_DATA
from thinkswitch.config import SourceConfig
from thinkswitch.data import sources
from thinkswitch.data.domains import read_source
from thinkswitch.data.sources import DataError, load_hf, map_fields, origin, read_ids, read_records, sample

AIME26 = SHARED_DATA / "aime" / "aime26.jsonl"
PQAL = SHARED_DATA / "pubmedqa" / "ori_pqal.json"
PQA_TEST = SHARED_DATA / "pubmedqa" / "test_ground_truth.json"


# --- the real data -----------------------------------------------------------------------------------------------

def test_aime26_has_30_problems_with_integer_answers():
    records = read_records(AIME26)
    assert len(records) == 30
    assert all(set(r) == {"prompt", "answer"} for r in records)
    assert all(0 <= int(r["answer"]) <= 999 for r in records)
    assert all(r["prompt"].rstrip().endswith("within \\boxed{}.") for r in records)
    rows = map_fields(records, {"prompt": "prompt", "answer": "answer"}, "aime26")
    assert [r["id"] for r in rows] == [str(i) for i in range(30)]


@pytest.mark.parametrize("year", ["aime24", "aime25"])
def test_earlier_aime_years_are_disjoint_from_2026(year):
    earlier = read_records(SHARED_DATA / "aime" / f"{year}.jsonl")
    assert len(earlier) == 30
    assert not {r["prompt"].strip() for r in earlier} & {r["prompt"].strip() for r in read_records(AIME26)}


def test_pubmedqa_keyed_by_pubmed_id():
    records = read_records(PQAL)
    assert len(records) == 1000
    ids = [r["id"] for r in records]
    assert len(set(ids)) == 1000 and all(isinstance(i, str) and i.isdigit() for i in ids)
    assert all(isinstance(r["CONTEXTS"], list) and all(isinstance(c, str) for c in r["CONTEXTS"]) for r in records)
    assert {r["final_decision"] for r in records} == {"yes", "no", "maybe"}
    rows = map_fields(records, {"prompt": "QUESTION", "context": "CONTEXTS", "answer": "final_decision"}, "pubmedqa")
    assert rows[0] == {"id": records[0]["id"], "prompt": records[0]["QUESTION"],
                       "context": records[0]["CONTEXTS"], "answer": records[0]["final_decision"]}


def test_pubmedqa_test_split_ids_are_all_labelled_questions():
    truth = json.loads(PQA_TEST.read_text())
    assert len(truth) == 500 and set(truth.values()) == {"yes", "no", "maybe"}
    by_id = {r["id"]: r for r in read_records(PQAL)}
    assert set(truth) <= set(by_id)
    assert all(by_id[i]["final_decision"] == label for i, label in truth.items())


def test_a_json_object_of_labels_is_not_records():
    with pytest.raises(DataError, match=r"test_ground_truth.json: record '\d+' is not an object \(got a string\)"):
        read_records(PQA_TEST)


# --- file formats and their errors -------------------------------------------------------------------------------

def test_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": [1, 2]}\n', encoding="utf-8")
    assert read_records(path) == [{"a": 1}, {"a": [1, 2]}]


def test_json_list_and_keyed_object(tmp_path):
    listed, keyed = tmp_path / "list.json", tmp_path / "keyed.json"
    listed.write_text('[{"q": "a"}, {"q": "b"}]', encoding="utf-8")
    keyed.write_text('{"7": {"q": "a"}, "9": {"q": "b", "id": "own"}}', encoding="utf-8")
    assert read_records(listed) == [{"q": "a"}, {"q": "b"}]
    assert read_records(keyed) == [{"id": "7", "q": "a"}, {"q": "b", "id": "own"}]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("data.jsonl", '{"a": 1}\n{"a": 2}\n{"a": 3 "b": 4}\n',
         r"data\.jsonl:3: not valid JSON \(Expecting ',' delimiter\)"),
        ("data.jsonl", '{"a": 1}\n[1, 2]\n', r"data\.jsonl:2: expected a JSON object, got a list"),
        ("bad.json", '[{"q": 1}, 2]', r"bad\.json: record 1 is not an object \(got a number\)"),
        ("bad.json", "42", r"bad\.json: expected a list of objects or an object keyed by id, got a number"),
        ("bad.json", '{"a": 1,\n"b": }', r"bad\.json:2: not valid JSON"),
    ],
)
def test_json_errors_name_the_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_records(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: does not exist"):
        read_records(tmp_path / "nope.jsonl")


def test_unknown_extension_lists_the_supported(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.txt: unknown extension '\.txt'; supported: \.jsonl, \.json, \.csv"):
        read_records(path)


@pytest.mark.parametrize("name, data, message", [
    ("data.jsonl", b'{"a": 1}\n{"a": "\xff"}\n', r"data\.jsonl:2: not UTF-8 text \(invalid start byte at byte 7"),
    ("data.csv", b'a\n1\n\xff\n', r"data\.csv:3: not UTF-8"),
    ("data.json", b'[{"a": "\xff"}]', r"data\.json: not UTF-8"),
])
def test_not_utf8(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DataError, match=message):
        read_records(path)


def test_a_utf8_byte_order_mark_is_skipped(tmp_path):
    (tmp_path / "data.jsonl").write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    (tmp_path / "data.csv").write_bytes(b"\xef\xbb\xbfa,b\r\n1,2\r\n")
    assert read_records(tmp_path / "data.jsonl") == [{"a": 1}]
    assert read_records(tmp_path / "data.csv") == [{"a": "1", "b": "2"}]


def test_csv_round_trip(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('id,prompt,answer\n1,"What is 1,2?",3\n2,"two\nlines",4\n', encoding="utf-8")
    assert read_records(path) == [{"id": "1", "prompt": "What is 1,2?", "answer": "3"},
                                  {"id": "2", "prompt": "two\nlines", "answer": "4"}]


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,2\n1,2,3\n", r"data\.csv:3: 3 fields, but the header has 2 \(a, b\)$"),
    ("a,b,c\n1,2,3\n\n1,2\n", r"data\.csv:4: 2 fields, but the header has 3 \(a, b, c\)$"),
    ('a,b\n1,"two\nlines"\n5\n', r"data\.csv:4: 1 field, but the header has 2"),
    ("id,prompt,id\n1,x,2\n", r"data\.csv:1: column 'id' appears twice in the header"),
])
def test_csv_rows_must_match_the_header(tmp_path, text, message):
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_records(path)


# --- size limits -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["data.jsonl", "data.csv"])
def test_a_50mb_line_is_refused_without_being_read_whole(tmp_path, name):
    path = tmp_path / name
    with path.open("wb") as f:
        f.write(b'prompt\n"short"\n' if name == "data.csv" else b'{"prompt": "short"}\n')
        f.write(b'{"prompt": "' + b"x" * (50 << 20) + b'"}\n')
    lineno = 3 if name == "data.csv" else 2
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=rf"{name}:{lineno}: line larger than 1,048,576 bytes \(thinkswitch"):
            read_records(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"read {peak:,} bytes into memory for a refused line"


def test_the_record_limit_is_a_module_setting(tmp_path, monkeypatch):
    path = tmp_path / "data.jsonl"
    path.write_text('{"p": "' + "x" * 200 + '"}\n', encoding="utf-8")
    assert read_records(path) == [{"p": "x" * 200}]
    monkeypatch.setattr(sources, "MAX_RECORD_BYTES", 100)
    with pytest.raises(DataError, match=r"data\.jsonl:1: line larger than 100 bytes"):
        read_records(path)


@pytest.mark.parametrize("name, text, message", [
    ("data.csv", 'a,b\n1,"' + "y\n" * 80 + '"\n', r"data\.csv:\d+: record larger than 100 bytes"),
    ("data.json", '[{"p": "ok"}, {"p": {"deep": ["' + "z" * 150 + '"]}}]', r"data\.json: record 1: record larger"),
    ("data.json", '{"k1": {"p": "ok"}, "k2": {"p": "' + "z" * 150 + '"}}', r"data\.json: record 'k2': record larger"),
])
def test_records_over_the_limit_are_refused_in_every_format(tmp_path, monkeypatch, name, text, message):
    monkeypatch.setattr(sources, "MAX_RECORD_BYTES", 100)
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_records(path)


def test_parquet_record_over_the_limit(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"p": "ok"}, {"p": "z" * 150}]), tmp_path / "data.parquet")
    monkeypatch.setattr(sources, "MAX_RECORD_BYTES", 100)
    with pytest.raises(DataError, match=r"data\.parquet: row 1: record larger than 100 bytes"):
        read_records(tmp_path / "data.parquet")


def test_a_csv_field_over_the_csv_modules_default_limit_is_read(tmp_path):
    path = tmp_path / "data.csv"
    big = "w" * 200_000  # the csv module refuses fields over 131,072 characters unless told otherwise
    path.write_text(f"a,b\n1,{big}\n", encoding="utf-8")
    before = csv.field_size_limit()
    assert read_records(path) == [{"a": "1", "b": big}]
    assert csv.field_size_limit() == before  # the process-wide setting is put back


def test_a_json_file_too_large_to_parse_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_JSON_BYTES", 1000)
    path = tmp_path / "big.json"
    path.write_text(json.dumps([{"p": "x" * 10} for _ in range(100)]), encoding="utf-8")
    with pytest.raises(DataError, match=r"big\.json: 2,100 bytes, larger than a JSON file may be \(1,000, "
                                        r"thinkswitch\.data\.sources\.MAX_JSON_BYTES: it is parsed whole\); use JSONL"):
        read_records(path)


# --- duplicate ids and id lists ----------------------------------------------------------------------------------

@pytest.mark.parametrize("files, fields, message", [
    ({"a.jsonl": '{"id": 7, "q": "x"}\n\n{"id": 8, "q": "y"}\n{"id": "7", "q": "z"}\n'}, {"prompt": "q"},
     r"id '7' appears twice, at \S*a\.jsonl:1 and at \S*a\.jsonl:4; ids must be unique"),
    ({"a.csv": "num,q\n1,x\n2,y\n1,z\n2,w\n"}, {"id": "num", "prompt": "q"},
     r"id '1' appears twice, at \S*a\.csv:2 and at \S*a\.csv:4 \(and 1 more duplicate\)"),
    ({"a.jsonl": '{"id": "p1", "q": "x"}\n', "b.json": '{"p1": {"q": "y"}}'}, {"prompt": "q"},
     r"id 'p1' appears twice, at \S*a\.jsonl:1 and at \S*b\.json: record 'p1'"),
])
def test_duplicate_ids_name_the_id_and_both_places(tmp_path, files, fields, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    src = SourceConfig(files=[str(tmp_path / name) for name in files], fields=fields)
    with pytest.raises(DataError, match=r"^domain\.train \(.*\): " + message):
        read_source(src, "domain.train")


def test_records_without_ids_are_numbered_uniquely_across_files(tmp_path):
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_text('{"q": "x"}\n{"q": "y"}\n', encoding="utf-8")
    rows = read_source(SourceConfig(files=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
                                    fields={"prompt": "q"}), "domain.train")
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]


@pytest.mark.parametrize("text, message", [
    ("42", r"ids\.json: expected a list of ids or an object keyed by id, got a number"),
    ('"12345"', r"ids\.json: expected a list of ids or an object keyed by id, got a string"),
    ('["1", {"id": "2"}]', r"ids\.json: item 1 is an object, not an id \(a string or an integer\)"),
    ("[1, null]", r"ids\.json: item 1 is null, not an id"),
    ("[1, true]", r"ids\.json: item 1 is a boolean, not an id"),
    ('["1",\n"2"', r"ids\.json:2: not valid JSON"),
    (None, r"ids\.json does not exist \(an id list\)"),
])
def test_malformed_id_lists(tmp_path, text, message):
    path = tmp_path / "ids.json"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=r"^domain\.eval\.include_ids: \S*" + message):
        read_ids(path, "domain.eval.include_ids")


def test_id_lists_as_lists_or_objects(tmp_path):
    (tmp_path / "list.json").write_text('[1, "2"]', encoding="utf-8")
    (tmp_path / "keyed.json").write_text('{"3": "yes", "4": "no"}', encoding="utf-8")
    assert read_ids(tmp_path / "list.json", "k") == {"1", "2"}
    assert read_ids(tmp_path / "keyed.json", "k") == {"3", "4"}


def test_parquet_round_trip(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{"id": "a", "context": ["x", "y"], "n": 1}, {"id": "b", "context": [], "n": 2}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data.parquet")
    assert read_records(tmp_path / "data.parquet") == rows


def test_parquet_via_pandas_without_an_engine_says_what_to_install(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"id": "a"}]), tmp_path / "data.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails: the pandas path, with no engine
    with pytest.raises(DataError, match=r"data\.parquet: reading Parquet needs pyarrow \(pip install pyarrow\): "):
        read_records(tmp_path / "data.parquet")


def test_parquet_without_pyarrow_or_pandas_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    for name in ("pyarrow", "pyarrow.parquet", "pandas"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails
    with pytest.raises(DataError, match=r"data\.parquet: reading Parquet needs pyarrow \(pip install pyarrow\)"):
        read_records(path)


def test_corrupt_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "data.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"data\.parquet: not a readable Parquet file"):
        read_records(path)


# --- Hugging Face datasets saved to disk -------------------------------------------------------------------------

def test_load_hf_from_a_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"pubid": 1, "question": "q1", "context": {"contexts": ["a", "b"]}, "final_decision": "yes"},
            {"pubid": 2, "question": "q2", "context": {"contexts": ["c"]}, "final_decision": "no"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    loaded = load_hf(str(tmp_path / "saved"), None, "train")
    assert loaded == rows
    mapped = map_fields(loaded, {"id": "pubid", "prompt": "question", "context": "context.contexts"}, "pqa")
    assert mapped == [{"id": "1", "prompt": "q1", "context": ["a", "b"]}, {"id": "2", "prompt": "q2", "context": ["c"]}]


def test_load_hf_picks_the_split_of_a_saved_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"x": 1}]),
                               "test": datasets.Dataset.from_list([{"x": 2}])})
    dd.save_to_disk(str(tmp_path / "saved"))
    assert load_hf(str(tmp_path / "saved"), None, "test") == [{"x": 2}]
    with pytest.raises(DataError, match=r"no split 'validation'; it has \['test', 'train'\]"):
        load_hf(str(tmp_path / "saved"), None, "validation")


def test_load_hf_failure_names_the_dataset(tmp_path):
    pytest.importorskip("datasets")
    with pytest.raises(DataError, match=r"dataset 'no-such-org/no-such-dataset' \(config None, split 'test'\)"):
        load_hf("no-such-org/no-such-dataset", None, "test")  # offline (conftest): fails without the network


# --- mapping and sampling ----------------------------------------------------------------------------------------

def test_map_fields_keeps_only_mapped_fields_and_numbers_ids():
    records = [{"q": "a", "a": 1, "extra": True}, {"q": "b", "a": 2, "extra": False}]
    assert map_fields(records, {"prompt": "q", "answer": "a"}, "src") == [
        {"id": "0", "prompt": "a", "answer": 1}, {"id": "1", "prompt": "b", "answer": 2}]


def test_map_fields_keeps_a_records_own_id():
    assert map_fields([{"id": 17, "q": "a"}], {"prompt": "q"}, "src") == [{"id": "17", "prompt": "a"}]


def test_map_fields_missing_field_names_source_record_and_keys():
    records = [{"QUESTION": "a", "final_decision": "yes"}, {"id": "123", "final_decision": "no", "YEAR": None}]
    with pytest.raises(DataError) as e:
        map_fields(records, {"prompt": "QUESTION", "answer": "final_decision"}, "pubmedqa")
    assert str(e.value) == ("pubmedqa: record 1 (id '123') has no field 'QUESTION' (for 'prompt'); "
                            "available: ['YEAR', 'final_decision', 'id']")


def test_map_fields_nested():
    records = [{"meta": {"gold": {"value": "7"}}, "problem": "p", "idx": 4}]
    assert map_fields(records, {"id": "idx", "prompt": "problem", "answer": "meta.gold.value"}, "src") == [
        {"id": "4", "prompt": "p", "answer": "7"}]
    assert map_fields([{"a.b": 1}], {"x": "a.b"}, "src") == [{"id": "0", "x": 1}]  # a dotted key itself wins


@pytest.mark.parametrize(
    "record, message",
    [
        ({"meta": {"x": 1}}, r"src: record 0 has no field 'meta.gold' \(for 'answer'\); 'meta' has: \['x'\]"),
        ({"meta": "flat"}, r"src: record 0 has no field 'meta.gold' \(for 'answer'\); 'meta' is str, not an object"),
    ],
)
def test_map_fields_nested_missing(record, message):
    with pytest.raises(DataError, match=message):
        map_fields([record], {"answer": "meta.gold"}, "src")


def test_sample_is_seeded():
    records = [{"id": str(i)} for i in range(100)]
    first = sample(records, 10, seed=3, source="src")
    assert first == sample(records, 10, seed=3, source="src")
    assert first != sample(records, 10, seed=4, source="src")
    assert len({r["id"] for r in first}) == 10
    assert sorted(sample(records, 100, 0, "src"), key=lambda r: int(r["id"])) == records


def test_sample_too_many():
    with pytest.raises(DataError, match=r"^aime26: asked for 31 records, it holds 30$"):
        sample([{}] * 30, 31, 0, "aime26")


# --- provenance: where each record was read ----------------------------------------------------------------------

def test_records_know_their_file_and_line(tmp_path):
    jsonl, csv_file, listed, keyed = (tmp_path / n for n in ("d.jsonl", "d.csv", "l.json", "k.json"))
    jsonl.write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    csv_file.write_text('a,b\n1,"two\nlines"\n3,4\n', encoding="utf-8")
    listed.write_text('[{"q": "a"}, {"q": "b"}]', encoding="utf-8")
    keyed.write_text('{"7": {"q": "a"}}', encoding="utf-8")
    assert [origin(r) for r in read_records(jsonl)] == [f"{jsonl}:1", f"{jsonl}:3"]
    assert [origin(r) for r in read_records(csv_file)] == [f"{csv_file}:3", f"{csv_file}:4"]  # a row's last line
    assert [origin(r) for r in read_records(listed)] == [f"{listed}: record 0", f"{listed}: record 1"]
    assert origin(read_records(keyed)[0]) == f"{keyed}: record '7'"
    mapped = map_fields(read_records(jsonl), {"x": "a"}, "src")
    assert mapped == [{"id": "0", "x": 1}, {"id": "1", "x": 2}] and type(mapped[0]).__mro__[1] is dict
    assert [origin(r) for r in mapped] == [f"{jsonl}:1", f"{jsonl}:3"]  # kept through the field mapping
    assert json.loads(json.dumps(mapped[0])) == {"id": "0", "x": 1} and origin({"a": 1}) is None
    assert [origin(r) for r in map_fields([{"a": 1}], {"x": "a"}, "src")] == ["src: record 0"]


def test_parquet_and_saved_dataset_rows_know_their_index(tmp_path):
    datasets = pytest.importorskip("datasets")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"a": 1}, {"a": 2}]), tmp_path / "d.parquet")
    assert origin(read_records(tmp_path / "d.parquet")[1]) == f"{tmp_path / 'd.parquet'}: row 1"
    datasets.Dataset.from_list([{"a": 1}, {"a": 2}]).save_to_disk(str(tmp_path / "saved"))
    records = load_hf(str(tmp_path / "saved"), None, "train")
    assert records == [{"a": 1}, {"a": 2}] and origin(records[1]).endswith(": row 1")
    assert f"dataset {str(tmp_path / 'saved')!r}" in origin(records[1])
