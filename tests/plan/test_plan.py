"""`thinkswitch-plan`: fits per card from the run's own memory plans, the time model, calibration, the docs' tables."""

import json
import re
import subprocess
import sys
import time

import pytest

from benchmarks import plan_tables  # regenerates the docs' plan blocks
from tests.support.paths import ROOT
from thinkswitch.errors import ConfigError
from thinkswitch.sizing.cards import CARDS, card, card_for_device_name, custom_card, parse_amount
from thinkswitch.sizing.shapes import QWEN3_4B_2507, GiB, kv_bytes_per_token
from thinkswitch.sizing.timing import (
    HF_KV_PASSES,
    Assumptions,
    calibrate,
    continuous_decode,
    overhead_from,
    static_decode,
    step_seconds,
)

KV = kv_bytes_per_token(QWEN3_4B_2507, "bfloat16")
DECODE = dict(prompt=512, max_new=32768, weight_read=8 * 10**9, kv_per_token=KV, bandwidth=3.35e12, efficiency=0.7,
              overhead=0.03)



def plan(*args: str) -> str:
    return plan_tables.plan_for(" ".join(args))


# --- the time model ---------------------------------------------------------------------------------------------

def test_static_batches_wait_for_the_longest_trace_continuous_ones_refill():
    static = static_decode(sequences=15, rows=8, **DECODE)
    continuous = continuous_decode(sequences=15, slots=8, **DECODE)
    assert continuous.seconds < static.seconds
    # static: two batches (8, 7 rows), each lasting b/(b+1) of max_new_tokens
    assert static.steps == int(8 / 9 * 32768 + 7 / 8 * 32768)
    # continuous: 15 x 16,384 tokens at 8 at once plus a drain of one mean trace
    assert continuous.steps == int(15 * 16384 / 8 + 16384)
    one = static_decode(sequences=1, rows=1, **DECODE)
    assert one.steps == 16384 and one.seconds == pytest.approx(
        16384 * step_seconds(8e9 + (512 + 16384 / 2) * KV, 3.35e12, 0.7, 0.03))
    # every sequence with a slot: the longest of them
    assert continuous_decode(sequences=15, slots=64, **DECODE).steps == int(15 / 16 * 32768)


def test_decode_time_falls_with_bandwidth_and_rises_with_the_overhead():
    slow = static_decode(sequences=15, rows=8, **{**DECODE, "bandwidth": 448e9})
    fast = static_decode(sequences=15, rows=8, **DECODE)
    eager = static_decode(sequences=15, rows=8, **{**DECODE, "overhead": 0.1})
    assert slow.seconds > fast.seconds and eager.seconds > fast.seconds


def test_overhead_from_a_measurement_inverts_the_step_time():
    per_step_bytes = 8e9 + 8 * (250 + 512) * KV
    seconds = step_seconds(per_step_bytes, 4.8e12, 0.7, 0.021)
    measured = 8 / seconds  # tokens/s at 8 sequences at once
    assert overhead_from(measured, concurrency=8, weight_read=8e9, kv_read=8 * (250 + 512) * KV, bandwidth=4.8e12,
                         efficiency=0.7) == pytest.approx(0.021)


def test_cb_moves_the_kv_cache_11_times_per_step_for_qwen3_under_sdpa():
    """Issue 26, finding 8: transformers' cb copies each layer's K/V out of its pages (`index_select`) and, with a
    mask and several query tokens, widens the copy to every query head (`repeat_kv`) for SDPA: 3 + 2 x 4 passes for
    Qwen3-4B (32 query heads, 8 K/V heads); HF generate's DynamicCache copies the cache with torch.cat: 3."""
    import inspect

    from transformers.cache_utils import DynamicLayer
    from transformers.generation.continuous_batching.cache_allocators.full_attention import FullAttentionCacheAllocator
    from transformers.integrations import sdpa_attention

    from thinkswitch.sizing.timing import HF_KV_PASSES, cb_kv_passes

    assert "torch.index_select(k_cache, 0, read_index)" in inspect.getsource(FullAttentionCacheAllocator.update)
    assert "return attention_mask is None" in inspect.getsource(sdpa_attention.use_gqa_in_sdpa)
    assert "torch.cat([self.keys, key_states]" in inspect.getsource(DynamicLayer.update) and HF_KV_PASSES == 3
    assert (cb_kv_passes(4, 8), cb_kv_passes(4, 1), cb_kv_passes(1, 8)) == (11, 3, 3)
    once = continuous_decode(sequences=15, slots=8, **DECODE)
    cb = continuous_decode(sequences=15, slots=8, kv_passes=11, **DECODE)
    assert cb.steps == once.steps and cb.seconds > 2 * once.seconds
    kv_read = once.concurrency * (512 + 32768 / 3) * KV
    assert cb.seconds == pytest.approx(cb.steps * step_seconds(8e9 + 11 * kv_read, 3.35e12, 0.7, 0.03), rel=1e-3)


def test_cards_and_amounts():
    assert card("H100") is CARDS["h100"] and card_for_device_name("NVIDIA H200") is CARDS["h200"]
    assert card_for_device_name("NVIDIA GeForce RTX 3070") is CARDS["3070"] and card_for_device_name("TPU") is None
    assert parse_amount("8GB", "bytes") == 8 * GiB and parse_amount("448GB/s", "bandwidth") == 448e9
    assert parse_amount("40TFLOPS", "flops") == 40e12
    with pytest.raises(ValueError, match="expected an amount like"):
        parse_amount("8 apples", "bytes")
    with pytest.raises(ValueError, match="unknown card '3080'"):
        card("3080")
    mine = custom_card("8GB", "448GB/s")
    assert mine.memory_bytes == 8 * GiB and mine.bf16_flops == pytest.approx(40.6e12)


def test_cards_are_planned_at_the_memory_cuda_reports_not_the_size_on_the_box():
    """Issue 26, finding 9: an 8 GB RTX 3070 reports 7.78 GiB to CUDA, an H100 80GB 79.19 GiB."""
    assert CARDS["3070"].memory_bytes == int(7.78 * GiB) and CARDS["h100"].memory_bytes == int(79.19 * GiB)
    assert all(c.memory_bytes < c.nominal_gb * GiB for c in CARDS.values())
    assert "7.78 GiB of 8 GB" in CARDS["3070"].describe()


# --- plans ------------------------------------------------------------------------------------------------------

def rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith(("| card", "| ---"))]


def test_paper_preset_on_the_papers_8gb_card_fits_with_nf4_and_says_so():
    text = plan("experiment=paper_aime", "--cards", "3070,h100")
    table = rows(text)
    assert [r[0] for r in table] == ["RTX 3070", "RTX 3070", "H100 SXM"]
    refused, fitted, h100 = table
    assert refused[1] == "no" and "the weights need 7.5 GiB; 7.3 GiB free on the card" in text  # bf16
    assert fitted[1] == "yes" and "`generation.quantization=nf4`" in fitted[2]
    assert "generation nf4" in fitted[4] and "adapter merge on cpu" in fitted[4]
    assert h100[1] == "yes" and h100[2] == "as configured" and "adapter merge on the card" in h100[4]
    for row in (fitted, h100):
        hours = [float(x) for x in row[6:12]]
        assert all(h > 0 for h in hours) and float(row[12]) > 0
        assert hours[5] == pytest.approx(hours[3] + 2 * hours[4], abs=0.15)  # iteration 0's evaluation + 2 iterations
    assert float(fitted[11]) > float(h100[11])  # the small card is slower
    assert "efficiency 0.7 of peak bandwidth" in text and "(assumed, not calibrated)" in text


def test_a_card_too_small_for_nf4_weights_is_refused_with_the_reason():
    from thinkswitch.plan.render import plan_text

    text = plan_text(["experiment=paper_aime"], [custom_card("2GB", "100GB/s")])
    table = rows(text)
    assert [r[1] for r in table] == ["no", "no"] and "the weights need 2.6 GiB; 1.5 GiB free on the card" in text


def test_a_big_card_fits_as_configured_and_the_price_is_given():
    from thinkswitch.plan.render import plan_text

    text = plan_text(["experiment=paper_aime", "cost.gpu_hour_usd=1.0"], [CARDS["h200"]])
    (row,) = rows(text)
    assert row[1] == "yes" and row[2] == "as configured" and float(row[12]) == pytest.approx(float(row[11]), abs=0.06)
    assert "run hours x 1.00 USD per card-hour (given)" in text


def test_calibration_from_a_gpu_check_file(tmp_path):
    params = 3_600_000_000
    kv_read = HF_KV_PASSES * 8 * (250 + 512) * KV  # HF generate moves its cache 3 times a step (the plan counts it)
    tokens_per_s = 8 / step_seconds(2 * params + kv_read, 4.8e12, 0.7, 0.012)
    rows_ = [{"check": "env", "gpu": "NVIDIA H200"}, {"check": "build", "params": params},
             {"check": "generate", "backend": "hf", "batch_size": 8, "prompts": 15, "tokens": 15 * 1024,
              "tokens_per_s": tokens_per_s},
             {"check": "distill", "tokens_per_s": 2000.0}]
    path = tmp_path / "gpu_check.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows_))
    a = calibrate(path, Assumptions())
    assert a.static_overhead == pytest.approx(0.012, abs=1e-5)
    assert a.mfu == pytest.approx(2000 * 6 * params / 989e12, abs=1e-4)
    assert a.continuous_overhead == Assumptions.continuous_overhead  # not measured: still assumed
    assert "calibrated from gpu_check.jsonl on NVIDIA H200" in a.source
    path.write_text(json.dumps({"check": "env", "gpu": "Some GPU"}) + "\n")
    with pytest.raises(ValueError, match="not in the card table"):
        calibrate(path, Assumptions())


# --- the console script -----------------------------------------------------------------------------------------

def test_the_console_script_answers_in_seconds():
    """torch and transformers load for `cb`'s cache (transformers' own sizing, on a given free memory, no tensors)."""
    code = "from thinkswitch.plan.cli import main; main(['experiment=paper_aime', '--cards', '3070,h100'])"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(r for r in proc.stdout.splitlines() if r.startswith("| RTX 3070 | yes"))
    assert "generation.quantization=nf4" in line and re.search(r"\| \d+\.\d \| \d+\.\d\d \|$", line)
    assert seconds < 45  # seconds, not minutes (about 10 s here, 5 of them importing torch and transformers)


@pytest.mark.parametrize("args,message", [
    (["--memory", "8GB"], "--memory and --bandwidth go together"),
    (["--cards", "3080"], "unknown card '3080'"),
    (["bogus=1"], "Could not override 'bogus'"),
    (["keep_checkpoints=sometimes"], "Invalid value 'sometimes', expected one of [all, last, none]"),
])
def test_bad_arguments_get_one_line_and_exit_2(args, message, capsys):
    from thinkswitch.plan.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_model_without_a_config_is_a_config_error():
    from thinkswitch.plan.render import plan_text

    with pytest.raises(ConfigError, match="model.thinking"):
        plan_text(["model=local", "model.instruct=/nowhere/i", "model.thinking=/nowhere/t"], [CARDS["h100"]])


# --- the docs ---------------------------------------------------------------------------------------------------

def test_docs_plans_are_what_thinkswitch_plan_prints():
    """docs/engines-and-gpus.md's plan blocks come from `thinkswitch-plan`, unedited
    (`python -m benchmarks.plan_tables` regenerates them)."""
    found = plan_tables.blocks(plan_tables.PAGE.read_text())
    assert [args for args, _ in found] == ["experiment=paper_aime --cards 3070,h100",
                                           "experiment=paper_aime generation.backend=cb --cards 3070,h100",
                                           "experiment=paper_aime evaluate=avg4 --cards 3070,h100",
                                           "experiment=paper_aime"]
    for args, body in found:
        assert body == plan_tables.plan_for(args), f"stale plan block ({args}): python -m benchmarks.plan_tables"


def test_readme_asks_the_plan_for_the_papers_card_and_an_h100_and_links_its_answer():
    """The README's answer to "can I run the paper on my 8 GB card?" is the `thinkswitch-plan` command; its output,
    unedited and checked above, is on the docs page the README links to (the README holds no plan table)."""
    readme = (plan_tables.ROOT / "README.md").read_text()
    assert "thinkswitch-plan experiment=paper_aime --cards 3070,h100\n" in readme and not plan_tables.blocks(readme)
    assert "(docs/engines-and-gpus.md#what-it-says-for-the-papers-preset)" in readme
    page = plan_tables.PAGE.read_text()
    section = page[page.index("### What it says for the paper's preset"):]
    assert plan_tables.blocks(section)[0][0] == "experiment=paper_aime --cards 3070,h100"


def test_avg_at_4_is_priced_beside_the_papers_single_sample():
    """`evaluate=avg4` answers every evaluation question 4 times: more evaluation hours, the rest unchanged."""
    one, four = plan("experiment=paper_aime", "--cards", "h100"), plan("experiment=paper_aime evaluate=avg4",
                                                                       "--cards", "h100")
    assert "evaluation: 30 questions x 1," in one and "evaluation: 30 questions x 4," in four
    (a,), (b,) = rows(one), rows(four)
    generate, evaluate = 6, 9  # columns: generate h, evaluate h
    assert b[generate] == a[generate] and float(b[evaluate]) > 2 * float(a[evaluate])
    assert float(b[12]) > float(a[12])  # dollars


def test_gold_oracle_generates_its_labels_like_the_method():
    """The oracle filters the thinking model's own samples, so its plan holds their generation."""
    assert "generate thinking 15" in plan("experiment=paper_aime method=gold_oracle", "--cards", "h100")


def test_vllm_with_nf4_is_never_priced():
    """vLLM 0.32 has no bitsandbytes quantization (issue 26, finding 2): the plan refuses it, and never proposes it."""
    from tests.support.shared import compose
    from thinkswitch.plan.fit import fit, load_model_shape, plan_card
    from thinkswitch.sizing.cards import card
    from thinkswitch.sizing.timing import Assumptions

    cfg = compose(["experiment=paper_aime", "generation.backend=vllm", "generation.quantization=nf4"])
    plan = plan_card(cfg, load_model_shape(cfg), card("3070"), Assumptions(), None)
    assert not plan.fits and "vLLM has no bitsandbytes" in plan.why[0] and not plan.seconds
    plain = compose(["experiment=paper_aime", "generation.backend=vllm"])
    assert all("generation.quantization=nf4" not in p.overrides
               for p in fit(plain, load_model_shape(plain), card("3070"), Assumptions(), None))


# --- the engines' own rules (issue 26) ---------------------------------------------------------------------------

def paper(*overrides: str):
    from tests.support.shared import compose
    from thinkswitch.plan.fit import load_model_shape

    cfg = compose(["experiment=paper_aime", *overrides])
    return cfg, load_model_shape(cfg)


def test_the_3070s_recommended_cb_budget_fits_transformers_own_sizing():
    """The plan's 3070 row recommends the longest budget (a multiple of 1,024) whose trace fits `cb`'s paged cache as
    transformers sizes it on the card's usable free memory, the check the run makes at start; 1,024 more does not."""
    from thinkswitch.engines.paged_cache import plan_paged_cache
    from thinkswitch.plan.fit import fit
    from thinkswitch.sizing.weights import generation_weight_bytes

    cfg, model = paper()
    last = fit(cfg, model, card("3070"), Assumptions(), None)[-1]
    assert last.fits and "generation.quantization=nf4" in last.overrides
    (budget,) = [int(o.split("=")[1]) for o in last.overrides if o.startswith("model.sampling.thinking.max_new")]
    assert budget < 32768 and budget % 1024 == 0
    cache = dict(dtype="bfloat16", device="cuda", free_bytes=card("3070").free_bytes, prompt_tokens=[512] * 30,
                 weight_bytes=generation_weight_bytes(model.tensors, "bfloat16", "nf4"))
    assert plan_paged_cache(QWEN3_4B_2507, max_new_tokens=budget, **cache).fits
    assert not plan_paged_cache(QWEN3_4B_2507, max_new_tokens=budget + 1024, **cache).fits


def test_the_plan_and_the_run_list_the_same_jobs():
    """One job list (`run_plan.jobs_for`): the plan's is the run's with its assumed prompt lengths; `iterations=0`
    generates no labels in either."""
    from thinkswitch.plan.fit import generation_jobs, plan_card
    from thinkswitch.sizing.run_plan import jobs_for

    cfg, _ = paper()
    a = Assumptions()
    jobs = generation_jobs(cfg, a)
    assert jobs == jobs_for(cfg, [512] * 15, [512] * 30)
    assert [j.name for j in jobs] == ["generate", "evaluate thinking", "evaluate instruct"]
    none, model = paper("iterations=0")
    assert [j.name for j in generation_jobs(none, a)] == ["evaluate thinking", "evaluate instruct"]
    only_evaluation = plan_card(none, model, card("h100"), a, None)
    assert only_evaluation.fits and "distill" not in only_evaluation.precision and only_evaluation.run_hours > 0


def test_vllm_is_planned_by_its_own_pool_and_context():
    """vLLM's KV pool (0.9 x the card as CUDA reports it, less the weights and its activation peak) must hold one
    request of max_model_len, the longest prompt + its budget as the run sets it; its default max_num_seqs is 1,024
    on an H100, 256 on smaller cards and the A100."""
    from thinkswitch.plan.fit import plan_card
    from thinkswitch.plan.slots import vllm_max_num_seqs

    cfg, model = paper("generation.backend=vllm")
    assert plan_card(cfg, model, card("4090"), Assumptions(), None).fits
    long, model = paper("generation.backend=vllm", "model.sampling.thinking.max_new_tokens=100000")
    refused = plan_card(long, model, card("4090"), Assumptions(), None)
    assert not refused.fits and "one request of max_model_len=100,512" in refused.why[0]
    assert "lower model.sampling.thinking.max_new_tokens" in refused.why[0]
    bf16_on_8gb = plan_card(cfg, model, card("3070"), Assumptions(), None)
    assert not bf16_on_8gb.fits and "vLLM's share of the card (0.9 x 7.8 GiB) is used up by" in bf16_on_8gb.why[0]
    assert [vllm_max_num_seqs({}, card(c)) for c in ("3070", "a100-80", "h100")] == [256, 256, 1024]
    assert vllm_max_num_seqs({"max_num_seqs": 64}, card("h100")) == 64


def test_vllm_is_not_planned_where_it_would_not_start():
    """vLLM refuses to start where the free memory is below gpu_memory_utilization x the card: 0.95 of a 3070's
    7.78 GiB is more than the 7.28 GiB free after CUDA's context."""
    from thinkswitch.plan.fit import plan_card

    cfg, model = paper("generation.backend=vllm", "generation.vllm.gpu_memory_utilization=0.95")
    plan = plan_card(cfg, model, card("3070"), Assumptions(), None)
    assert not plan.fits and "vLLM needs 7.4 GiB free on the card to start" in plan.why[0]
