"""An offline Hugging Face cache as a user who downloaded the paper's ids once has it (`hf download ...`).

`build_hub_cache(home, instruct, thinking)` writes, under `<home>/hub`, in the hub's own cache layout
(`models--Qwen--Qwen3-4B-Instruct-2507/{refs/main, snapshots/<commit>/<file> -> ../../blobs/<sha256>}`):
- the tiny 2507-convention pair (tests/tinypair.py) under the paper's model ids;
- `MathArena/aime_2025` and `MathArena/aime_2026` (fields `problem_idx`, `problem`, `answer`: the problems of
  ../shared/data/aime without the local files' boxed-answer instruction, which the domain's template adds);
- `qiaojin/PubMedQA`, configs `pqa_labeled` (fields `pubid`, `question`, `context` {`contexts`, `labels`, `meshes`,
  ...}, `long_answer`, `final_decision`) and `pqa_unlabeled` (no `final_decision`), declared in its card's
  `configs` as on the hub, with `pqa_artificial` declared but not downloaded (only what a run needs is there).
  The labeled config holds the 500 questions of the official test split, the unlabeled one the other 500 of
  ../shared/data/pubmedqa/ori_pqal.json (on the hub the unlabeled set is a different, larger one).
Parquet files as the hub's dataset repos hold them. Nothing is copied into the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

INSTRUCT, THINKING = "Qwen/Qwen3-4B-Instruct-2507", "Qwen/Qwen3-4B-Thinking-2507"
AIME_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
PUBMEDQA_CARD = """---
license: mit
configs:
- config_name: pqa_artificial
  data_files:
  - split: train
    path: pqa_artificial/train-*
- config_name: pqa_labeled
  data_files:
  - split: train
    path: pqa_labeled/train-*
- config_name: pqa_unlabeled
  data_files:
  - split: train
    path: pqa_unlabeled/train-*
---
# PubMedQA (test copy)
"""
AIME_CARD = """---
license: cc-by-nc-sa-4.0
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# AIME (test copy)
"""
PARQUET = "train-00000-of-00001.parquet"


def put_repo(hub: Path, repo: str, files: dict[str, bytes], kind: str = "models") -> Path:
    """`files` (path in the repo -> bytes) as one commit of `repo` in the cache: blobs, a snapshot, refs/main."""
    root = hub / f"{kind}--{repo.replace('/', '--')}"
    commit = hashlib.sha1(json.dumps(sorted((k, hashlib.sha256(v).hexdigest()) for k, v in files.items()))
                          .encode()).hexdigest()
    snapshot = root / "snapshots" / commit
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


def aime_rows(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        record = json.loads(line)
        assert record["prompt"].endswith(AIME_SUFFIX), record["prompt"][-120:]
        rows.append({"problem_idx": i, "problem": record["prompt"][:-len(AIME_SUFFIX)],
                     "answer": int(record["answer"]), "problem_type": ["Algebra"]})
    return rows


def pubmedqa_rows(data: Path) -> tuple[list[dict], list[dict]]:
    """(labeled, unlabeled) rows with the hub's field names."""
    records = json.loads((data / "ori_pqal.json").read_text())
    test = set(json.loads((data / "test_ground_truth.json").read_text()))
    labeled, unlabeled = [], []
    for pubid, r in records.items():
        context = {"contexts": r["CONTEXTS"], "labels": r["LABELS"], "meshes": r["MESHES"]}
        row = {"pubid": int(pubid), "question": r["QUESTION"], "context": context, "long_answer": r["LONG_ANSWER"]}
        if pubid in test:
            context.update(reasoning_required_pred=r["reasoning_required_pred"],
                           reasoning_free_pred=r["reasoning_free_pred"])
            labeled.append({**row, "final_decision": r["final_decision"]})
        else:
            unlabeled.append(row)
    return labeled, unlabeled


def build_hub_cache(home: Path, instruct: str, thinking: str, data: Path) -> Path:
    """The cache under `home` (an HF_HOME); returns `home`."""
    hub = home / "hub"
    for repo, path in ((INSTRUCT, instruct), (THINKING, thinking)):
        put_repo(hub, repo, {f.name: f.read_bytes() for f in Path(path).iterdir() if f.is_file()})
    for year in (2025, 2026):
        put_repo(hub, f"MathArena/aime_{year}", {
            "README.md": AIME_CARD.encode(),
            f"data/{PARQUET}": parquet(aime_rows(data / "aime" / f"aime{year % 100}.jsonl"))}, kind="datasets")
    labeled, unlabeled = pubmedqa_rows(data / "pubmedqa")
    put_repo(hub, "qiaojin/PubMedQA", {"README.md": PUBMEDQA_CARD.encode(),
                                       f"pqa_labeled/{PARQUET}": parquet(labeled),
                                       f"pqa_unlabeled/{PARQUET}": parquet(unlabeled)}, kind="datasets")
    return home


def offline_env(home: Path) -> dict[str, str]:
    """The environment of a run that reads only this cache."""
    return {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_DATASETS_CACHE": str(home / "datasets"),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
