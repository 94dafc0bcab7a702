"""A domain's task prompts: the training prompts (answers never used as labels) and the evaluation set.

Each example is `{"id", "prompt", "answer"}`; `prompt` is the user message, rendered from the
domain's `prompt_template`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from thinkswitch.config import DomainConfig, ModelConfig, SourceConfig
from thinkswitch.grading import gold_format, read_gold
from thinkswitch.sources import DataError, load_hf, load_json, map_fields, origin, read_records, sample

log = logging.getLogger(__name__)


def load_domain(cfg: DomainConfig, model_cfg: ModelConfig) -> tuple[list[dict], list[dict]]:
    """(training examples, evaluation examples), checked for overlap."""
    if cfg.source == "testbed":
        train, evaluation = _testbed(cfg, model_cfg)
    elif cfg.source == "data":
        train = _split(cfg, cfg.train, "train", cfg.train_prompts, "train_prompts")
        evaluation = _split(cfg, cfg.eval, "eval", cfg.eval_size, "eval_size")
    else:
        raise DataError(f"domain.source: unknown source {cfg.source!r}; expected 'testbed' or 'data'")
    check_disjoint(train, evaluation, cfg.name)
    return train, evaluation


def _testbed(cfg: DomainConfig, model_cfg: ModelConfig) -> tuple[list[dict], list[dict]]:
    from thinkswitch.testbed import TestbedSpec, task_examples

    if model_cfg.testbed is None:
        raise DataError("domain=testbed needs the testbed model pair (model=testbed): its task is the testbed's")
    spec = TestbedSpec(**dict(model_cfg.testbed))
    return (task_examples(cfg.train_prompts, cfg.seed, "train", spec),
            task_examples(cfg.eval_size, cfg.seed, "eval", spec))


def read_source(src: SourceConfig, key: str) -> list[dict]:
    """All records of a source, filtered by id lists and mapped to our field names."""
    if bool(src.files) == bool(src.dataset):
        raise DataError(f"{key}: set exactly one of files or dataset")
    if src.files:
        records = [r for f in src.files for r in read_records(Path(f).expanduser())]
        name = f"{key} ({', '.join(src.files)})"
    else:
        records = load_hf(src.dataset, src.config, src.split, src.revision)
        name = f"{key} ({src.dataset})"
    records = map_fields(records, OmegaConf.to_container(src.fields) if OmegaConf.is_config(src.fields)
                         else dict(src.fields), name)
    for ids_file, keep in ((src.include_ids, True), (src.exclude_ids, False)):
        if ids_file:
            ids = _read_ids(ids_file)
            records = [r for r in records if (r["id"] in ids) == keep]
    return records


def _read_ids(path: str) -> set[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: does not exist (an id list)")
    return {str(i) for i in load_json(p)}  # keys of an object, or items of a list


def render_prompt(template: str, record: dict, key: str) -> str:
    values = {k: "\n\n".join(map(str, v)) if isinstance(v, list) else v for k, v in record.items()}
    try:
        return template.format(**values)
    except KeyError as e:
        raise DataError(f"{key}: domain.prompt_template uses {{{e.args[0]}}}, but the records have only "
                        f"{sorted(record)} (map it in domain.train/eval.fields)") from None


def _split(cfg: DomainConfig, src: SourceConfig, split: str, n: int, size_key: str) -> list[dict]:
    key = f"domain.{split}"
    records = read_source(src, key)
    if not records:
        raise DataError(f"{key}: no records (after the id filters)")
    if n > len(records):
        raise DataError(f"domain.{size_key}={n}, but {key} holds only {len(records)} records")
    if split == "eval" and "answer" not in records[0]:
        raise DataError(f"{key}.fields: map `answer` (the evaluation set needs gold answers)")
    chosen = sample(records, n, cfg.seed, key)
    golds = [gold_answer(r, src.gold_regex, key) for r in chosen]
    if split == "eval":
        check_golds(chosen, golds, cfg.grader, key, src.gold_regex)
    examples = [{"id": r["id"], "prompt": render_prompt(cfg.prompt_template, r, key), "answer": gold}
                for r, gold in zip(chosen, golds)]
    log.info("%s: %d of %d records", key, len(examples), len(records))
    return examples


def _where(record: dict, key: str) -> str:
    return f"{origin(record) or key} (id {record['id']!r})"


def gold_answer(record: dict, gold_regex: Optional[str], key: str) -> Optional[str]:
    """A record's gold answer as a string: its `answer` field, or the group of `gold_regex`'s last match in it."""
    answer = record.get("answer")
    if answer is None or gold_regex is None:
        return None if answer is None else str(answer)
    matches = list(re.finditer(gold_regex, str(answer)))
    if not matches:
        raise DataError(f"{_where(record, key)}: {key}.gold_regex {gold_regex!r} does not match the answer "
                        f"{_excerpt(answer)}")
    return matches[-1].group(1)


def check_golds(records: list[dict], golds: list[Optional[str]], grader: str, key: str,
                gold_regex: Optional[str]) -> None:
    """Every evaluation question's gold answer is readable by the grader; else a DataError naming where (file and
    line, or dataset and row), the value, what the grader expects, and how many more are unreadable."""
    bad = [(r, g) for r, g in zip(records, golds) if read_gold(grader, g) is None]
    if not bad:
        return
    record, gold = bad[0]
    more = f" ({len(bad) - 1} more of the {len(records)} questions too)" if len(bad) > 1 else ""
    hint = ("" if gold_regex else f"; if the gold is inside a longer text, set {key}.gold_regex to a regular "
            "expression with one group that captures it (e.g. '####\\s*(-?\\d+)')")
    raise DataError(f"{_where(record, key)}: gold answer {_excerpt(gold)} is not readable by domain.grader={grader} "
                    f"(expects {gold_format(grader)}){more}{hint}")


def _excerpt(value: object, limit: int = 120) -> str:
    text = repr(None if value is None else str(value))
    return text if len(text) <= limit else f"{text[:limit // 2]} ... {text[-limit // 2:]} ({len(str(value))} chars)"


def check_disjoint(train: list[dict], evaluation: list[dict], name: Optional[str] = None) -> None:
    """Fail if a training prompt also appears in the evaluation set (contamination)."""
    eval_prompts = {ex["prompt"].strip() for ex in evaluation}
    leaked = [ex["id"] for ex in train if ex["prompt"].strip() in eval_prompts]
    if leaked:
        raise DataError(f"domain {name}: {len(leaked)} training prompt(s) also in the evaluation set, "
                        f"e.g. ids {leaked[:5]}")
