"""Reading records: the real evaluation data in ../shared/data, and small files written to tmp_path."""

import json
import sys

import pytest
from conftest import SHARED_DATA

from thinkswitch.sources import DataError, load_hf, map_fields, origin, read_records, sample

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


def test_not_utf8(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(DataError, match=r"data\.jsonl: not UTF-8"):
        read_records(path)


def test_csv_round_trip(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('id,prompt,answer\n1,"What is 1,2?",3\n2,"two\nlines",4\n', encoding="utf-8")
    assert read_records(path) == [{"id": "1", "prompt": "What is 1,2?", "answer": "3"},
                                  {"id": "2", "prompt": "two\nlines", "answer": "4"}]


def test_csv_row_longer_than_header(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n1,2,3\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.csv:3: more fields than the header's 2"):
        read_records(path)


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
