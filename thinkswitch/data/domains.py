"""A domain's task prompts: the training prompts (answers never used as labels) and the evaluation set.

Each example is `{"id", "prompt", "answer"}`; `prompt` is the user message, rendered from the
domain's `prompt_template`.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from pathlib import Path
from typing import Iterator, Optional

from thinkswitch.config import DomainConfig, ModelConfig, SourceConfig
from thinkswitch.data.grading import gold_format, read_gold
from thinkswitch.data.sources import check_unique_ids, load_hf, map_fields, origin, read_ids, read_located, sample
from thinkswitch.errors import DataError

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
    from thinkswitch.data.testbed_task import MAX_TASK_PROMPTS, task_capacity, task_examples

    if model_cfg.testbed is None:
        raise DataError("domain=testbed needs the testbed model pair (model=testbed): its task is the testbed's")
    spec = model_cfg.testbed
    for key, n, split in (("train_prompts", cfg.train_prompts, "train"), ("eval_size", cfg.eval_size, "eval")):
        cap = task_capacity(spec, split)  # checked before generating: the draw would never end, or fill memory
        if n > cap:
            why = (f"the testbed task gives at most {MAX_TASK_PROMPTS} prompts per split "
                   "(thinkswitch.data.testbed_task.MAX_TASK_PROMPTS)" if cap == MAX_TASK_PROMPTS else
                   f"the testbed's {split} split holds only {cap} distinct problems of "
                   f"{spec.min_digits}-{spec.max_digits} digits")
            raise DataError(f"domain.{key}={n}, but {why}")
    return (task_examples(cfg.train_prompts, cfg.seed, "train", spec),
            task_examples(cfg.eval_size, cfg.seed, "eval", spec))


def read_source(src: SourceConfig, key: str) -> list[dict]:
    """All records of a source, filtered by id lists and mapped to our field names."""
    if bool(src.files) == bool(src.dataset):
        raise DataError(f"{key}: set exactly one of files or dataset")
    if src.files:
        records, places = [], []
        for f in src.files:
            found, where = read_located(Path(f).expanduser())
            if not found:
                raise DataError(f"{key}.files: {Path(f).expanduser()} holds no records (an empty file?)")
            records += found
            places += where
        name = f"{key} ({', '.join(src.files)})"
    else:
        records = load_hf(src.dataset, src.config, src.split, src.revision, f"{key}.dataset")
        name = f"{key} ({src.dataset})"
        places = [f"row {i}" for i in range(len(records))]
    records = map_fields(records, dict(src.fields), name, places)
    check_unique_ids(records, places, name)
    for ids_key, keep in (("include_ids", True), ("exclude_ids", False)):
        if getattr(src, ids_key):
            ids = read_ids(getattr(src, ids_key), f"{key}.{ids_key}")
            records = [r for r in records if (r["id"] in ids) == keep]
    return records


def render_prompt(template: str, record: dict, key: str) -> str:
    values = {k: "\n\n".join(map(str, v)) if isinstance(v, list) else v for k, v in record.items()}
    try:
        return template.format(**values)
    except KeyError as e:
        raise DataError(f"{key}: domain.prompt_template uses {{{e.args[0]}}}, but the records have only "
                        f"{sorted(record)} (map it in domain.train/eval.fields)") from None
    except (IndexError, ValueError, AttributeError, TypeError) as e:
        raise DataError(f"domain.prompt_template: {template_error(e)}") from None


def template_error(error: Exception) -> str:
    """What is wrong with a prompt template that `str.format` refused (not a missing field)."""
    if isinstance(error, IndexError):
        return ("has a positional field `{}` (or `{0}`); every field must be named by a mapped field, and a literal "
                "brace is written twice: \\boxed{{}} renders as \\boxed{}")
    return f"is not a valid format string ({error}); a literal brace is written twice: {{{{ }}}}"


def check_template(cfg: DomainConfig) -> Iterator[str]:
    """The prompt template rendered against a record of each split's mapped fields (our names, placeholder
    values), before any data loads: every problem with it, each naming its key."""
    if cfg.source != "data":
        return
    for split in ("train", "eval"):
        fields = getattr(cfg, split).fields
        record = {"id": "0", **{ours: "x" for ours in fields}}
        try:
            cfg.prompt_template.format(**record)
        except KeyError as e:
            yield (f"domain.prompt_template uses {{{e.args[0]}}}, but domain.{split}.fields maps only "
                   f"{sorted(record)} (map it in domain.{split}.fields)")
            return
        except (IndexError, ValueError, AttributeError, TypeError) as e:
            yield f"domain.prompt_template: {template_error(e)}"
            return


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


def normalise(text: str) -> str:
    """Text as the contamination guard compares it: Unicode NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold()).split())


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
    """Fail if a training prompt also appears in the evaluation set (contamination), compared as
    `normalise`d text: prompts that differ only in case, whitespace or Unicode form are the same."""
    eval_prompts = {normalise(ex["prompt"]) for ex in evaluation}
    leaked = [ex["id"] for ex in train if normalise(ex["prompt"]) in eval_prompts]
    if leaked:
        raise DataError(f"domain {name}: {len(leaked)} training prompt(s) also in the evaluation set, "
                        f"e.g. ids {leaked[:5]}")
