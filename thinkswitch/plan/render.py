"""The plan as printed (Markdown): a headline, one table row per card and settings, details, the assumptions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from thinkswitch.config import ExperimentConfig
from thinkswitch.plan.fit import ENGINE_NAMES, HOURS, CardPlan, Model, fit, load_model_shape
from thinkswitch.sizing.cards import CARD_NOTE, Card
from thinkswitch.sizing.shapes import fmt_bytes, kv_bytes_per_token
from thinkswitch.sizing.timing import Assumptions, describe_assumptions
from thinkswitch.sizing.weights import generation_weight_bytes, param_count, weight_bytes


def headline(cfg: ExperimentConfig, model: Model, overrides: list[str]) -> list[str]:
    tensors, s = model.tensors, cfg.model.sampling
    kv = kv_bytes_per_token(model.config, model.dtype)
    return [
        f"thinkswitch-plan {' '.join(overrides)}".rstrip() + ": estimates, not measurements.",
        "",
        f"{Path(model.ref).name if model.source != 'config (estimated)' else model.ref} (shape from "
        f"{'its built-in config.json' if model.source == 'config (estimated)' else model.source}): "
        f"{count(param_count(tensors))} parameters, {model.dtype} {fmt_bytes(weight_bytes(tensors, model.dtype))}, "
        f"NF4 {fmt_bytes(generation_weight_bytes(tensors, model.dtype, 'nf4'))}, KV cache {fmt_bytes(kv)}/token. "
        f"Labels: {cfg.domain.train_prompts} prompts x {cfg.generation.samples_per_prompt}, up to "
        f"{s.thinking.max_new_tokens:,} new tokens; evaluation: {cfg.domain.eval_size} questions x "
        f"{cfg.evaluate.samples}, thinking up to {s.thinking.max_new_tokens:,} / instruct "
        f"{s.instruct.max_new_tokens:,}; "
        f"{cfg.iterations} iterations; trainer {cfg.trainer.name}; generation.backend={cfg.generation.backend}, "
        f"batch_size={cfg.generation.batch_size}.",
        "",
    ]


def count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 10**8 else f"{n / 1e6:.2f}M"


def table(plans: list[CardPlan]) -> list[str]:
    head = ("| card | fits | settings | engine | precision | batch / sequences at once | generate h | distill h "
            "| merge h | evaluate h | iteration h | run h | USD |")
    rows = [head, "|" + " --- |" * head.count(" | ") + " --- |"]
    for p in plans:
        settings = " ".join(f"`{o}`" for o in p.overrides) or "as configured"
        if not p.fits:
            rows.append(f"| {p.card.name} | no | {settings} | {p.engine} | {p.precision} | {p.batching or '-'} "
                        + "| - " * 7 + "|")
            continue
        usd = f"{p.usd:.2f}" if p.usd is not None else "-"
        hours = " | ".join(f"{p.hours(n):.2f}" for n in HOURS)
        rows.append(f"| {p.card.name} | yes | {settings} | {p.engine} | {p.precision} | {p.batching} | {hours} | "
                    f"{p.iteration_hours:.1f} | {p.run_hours:.1f} | {usd} |")
    return rows


def details(plans: list[CardPlan]) -> list[str]:
    out = []
    for p in plans:
        settings = " ".join(p.overrides) or "as configured"
        if not p.fits:  # the first reason in full: the others are the same arithmetic for other jobs
            also = [why.split(":")[0] for why in p.why[1:]]
            out.append(f"- {p.card.name}, {settings}: does not fit: {p.why[0]}"
                       + (f" (also: {', '.join(also)})" if also else ""))
        elif p.other_engine:
            other, seconds = p.other_engine
            out.append(f"- {p.card.name}, {settings}: {p.run_hours:.1f} h per run with {p.engine}; "
                       f"{ENGINE_NAMES[other]} would take {seconds / 3600:.1f} h.")
    return out


def render(cfg: ExperimentConfig, model: Model, plans: list[CardPlan], a: Assumptions, overrides: list[str],
           usd: Optional[float]) -> str:
    price = (f"{usd:.2f} USD per card-hour (given)" if usd is not None
             else "each card's typical price (the card table)")
    lines = headline(cfg, model, overrides) + table(plans) + [""] + details(plans) + [
        "", "Assumptions:", f"- cards: {'; '.join(c.describe() for c in unique_cards(plans))}. {CARD_NOTE}",
        f"- dollars: run hours x {price}.", *describe_assumptions(a)]
    return "\n".join(lines) + "\n"


def unique_cards(plans: list[CardPlan]) -> list[Card]:
    return list({p.card.key: p.card for p in plans}.values())


def plan_text(overrides: list[str], cards: list[Card], a: Assumptions = Assumptions(),
              usd: Optional[float] = None) -> str:
    """The plan of `thinkswitch <overrides>` on `cards`, as printed."""
    from thinkswitch.cli import compose
    from thinkswitch.validate import check_config

    cfg = compose(overrides)
    check_config(cfg, libraries=False)  # the run's own checks of its values (the libraries' when it starts)
    model = load_model_shape(cfg)
    usd = usd if usd is not None else cfg.cost.gpu_hour_usd
    plans = [p for c in cards for p in fit(cfg, model, c, a, usd)]
    return render(cfg, model, plans, a, overrides, usd)
