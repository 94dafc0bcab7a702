"""Reports over runs and sweeps: synthetic run dirs in Hydra's layout, read back from the files written."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from tests.support.runs import make_run, metrics_row
from thinkswitch.analysis.console import iteration_table
from thinkswitch.analysis.paired import change_metrics, paired_block, paired_run_summary
from thinkswitch.analysis.report import main, write_report
from thinkswitch.analysis.runs import find_runs, load_run
from thinkswitch.analysis.stats import wilson_interval
from thinkswitch.analysis.tables import aggregate, markdown_table, points_markdown, points_table, runs_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("accuracy_vs_iteration.png", "final_accuracy_vs_t.png", "final_accuracy_vs_train_prompts.png")


FINAL = {(0.1, 0): 50, (0.1, 1): 54, (0.3, 0): 60, (0.3, 1): 70}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """2 t x 2 seeds (finished), one unfinished run, one failed run, one job that never started."""
    root = tmp_path / "multirun"
    job = 0
    for (t, seed), final in FINAL.items():
        make_run(root / f"{job}_merge.t={t},seed={seed}", {"merge.t": str(t), "seed": str(seed)},
                 [((40, 100), (90, 100)), ((45, 100), (88, 100)), ((final, 100), (int(80 + 10 * t), 100))])
        job += 1
    make_run(root / f"{job}_merge.t=0.5,seed=0", {"merge.t": "0.5", "seed": "0"},
             [((40, 100), (90, 100)), ((47, 100), (85, 100))], finished=False)
    make_run(root / f"{job + 1}_merge.t=0.7,seed=0", {"merge.t": "0.7", "seed": "0"},
             [((40, 100), (90, 100))], finished=False, failed=True)
    (root / f"{job + 2}_merge.t=0.9,seed=0" / ".hydra").mkdir(parents=True)  # crashed before its baseline
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_png(path: Path) -> None:
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_find_and_load_runs(sweep, caplog):
    caplog.set_level(logging.INFO, logger="thinkswitch.analysis")
    runs = find_runs(sweep)
    assert [r.name.split("_")[0] for r in runs] == ["0", "1", "2", "3", "4", "5"]
    assert "6_merge.t=0.9,seed=0" in caplog.text and "no metrics.jsonl" in caplog.text
    loaded = [load_run(r) for r in runs]
    assert [r["status"] for r in loaded] == ["finished"] * 4 + ["unfinished", "failed"]
    assert loaded[1]["overrides"] == {"merge.t": "0.1", "seed": "1"}
    assert loaded[1]["config"] == {"merge.t": 0.1, "domain.train_prompts": 1024, "seed": 1,
                                   "domain.name": "testbed", "model.name": "testbed", "trainer.name": "lora"}
    assert len(loaded[0]["history"]) == 3 and loaded[0]["summary"]["wall_seconds"] == 12.5


def test_job_order_is_numeric(tmp_path):
    for job in (10, 2, 1):
        make_run(tmp_path / f"{job}_seed={job}", {"seed": str(job)}, [((1, 2), (2, 2))])
    assert [r.name for r in find_runs(tmp_path)] == ["1_seed=1", "2_seed=2", "10_seed=10"]


def test_runs_table_values(sweep):
    rows = runs_table([load_run(r) for r in find_runs(sweep)])
    first = rows[0]
    assert first["name"] == "merge.t=0.1,seed=0" and first["iterations"] == 2
    assert (first["instruct/baseline/correct"], first["instruct/final/correct"]) == (40, 50)
    assert (first["instruct/final/ci_low"], first["instruct/final/ci_high"]) == wilson_interval(50, 100)
    assert first["instruct/delta_accuracy"] == pytest.approx(0.10)
    assert first["cost_usd"] == 0.75 and first["wall_seconds"] == 12.5
    unfinished, failed = rows[4], rows[5]
    assert unfinished["iterations"] == 1 and unfinished["instruct/final/correct"] == 47
    assert unfinished["cost_usd"] == 0.5 and unfinished["wall_seconds"] is None  # cost from metrics.jsonl
    assert failed["error"] == "CUDA OOM" and failed["instruct/delta_accuracy"] == 0


def test_aggregate_pools_seeds():
    rows = [{"t": 0.3, "a/accuracy": 0.6, "a/ci_low": 0.5, "a/ci_high": 0.7},
            {"t": 0.1, "a/accuracy": 0.5, "a/ci_low": 0.4, "a/ci_high": 0.6},
            {"t": 0.1, "a/accuracy": 0.54, "a/ci_low": 0.44, "a/ci_high": 0.64},
            {"t": 0.5, "a/accuracy": None}, {"t": None, "a/accuracy": 0.9}]
    (x1, m1, lo1, hi1, n1), (x3, m3, lo3, hi3, n3) = aggregate(rows, "t", "a/accuracy")
    assert (x1, n1, lo1, hi1) == (0.1, 2, 0.5, 0.54) and m1 == pytest.approx(0.52)  # seeds: mean, min-max
    assert (x3, m3, lo3, hi3, n3) == (0.3, 0.6, 0.5, 0.7, 1)  # one seed: its Wilson interval
    mixed = aggregate([{"t": [0, 0.5, 1], "y": 1.0}, {"t": 0.2, "y": 0.0}], "t", "y")
    assert [a[0] for a in mixed] == [0.2, "[0, 0.5, 1]"] and mixed[1][2:] == (1.0, 1.0, 1)


def test_write_report_sweep(sweep, tmp_path):
    out = tmp_path / "out"
    written = write_report(sweep, out)
    # train_prompts is constant; two seeds per t: points pooled
    assert set(written) == {"runs.csv", "runs.md", *PLOTS[:2], "summary.json", "points.csv", "points.md"}
    assert all(p.parent == out and p.is_file() for p in written.values())
    rows = read_csv(out / "runs.csv")
    assert len(rows) == 6
    for row in rows[:4]:
        t, seed = float(row["merge.t"]), int(row["seed"])
        final = FINAL[(t, seed)]
        assert int(row["instruct/final/correct"]) == final and float(row["instruct/final/accuracy"]) == final / 100
        lo, hi = wilson_interval(final, 100)
        assert float(row["instruct/final/ci_low"]) == lo and float(row["instruct/final/ci_high"]) == hi
        assert int(row["thinking/final/correct"]) == int(80 + 10 * t)
    assert [r["status"] for r in rows] == ["finished"] * 4 + ["unfinished", "failed"]
    table = (out / "runs.md").read_text().split("\n\n")[0].splitlines()
    assert len(table) == 2 + 6 and all(line.startswith("| merge.t=") for line in table[2:])
    assert "40/100 40.0% [" in table[2] and "-> 50/100 50.0%" in table[2] and table[7].endswith("failed (iter 0) |")
    for name in PLOTS[:2]:
        assert_png(out / name)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["files"]) == set(written) and "final_accuracy_vs_train_prompts.png" in summary["skipped"]
    # the t plot pools seeds: its numbers are the mean over seeds of the finished runs
    finished = [r for r in runs_table([load_run(p) for p in find_runs(sweep)]) if r["status"] == "finished"]
    agg = aggregate(finished, "merge.t", "instruct/final/accuracy")
    assert [(x, round(m, 6), lo, hi, n) for x, m, lo, hi, n in agg] == [(0.1, 0.52, 0.5, 0.54, 2),
                                                                         (0.3, 0.65, 0.6, 0.7, 2)]


def test_train_prompts_sweep_and_default_out(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="thinkswitch.analysis")
    for job, (prompts, final) in enumerate([(15, 42), (60, 55), (240, 61)]):
        make_run(tmp_path / f"{job}_domain.train_prompts={prompts}", {"domain.train_prompts": str(prompts)},
                 [((40, 100), (90, 100)), ((final, 100), (85, 100))])
    written = write_report(tmp_path)
    assert written["runs.csv"].parent == tmp_path / "report"
    assert "final_accuracy_vs_t.png" not in written and "merge.t takes 1 distinct" in caplog.text
    assert_png(written["final_accuracy_vs_train_prompts.png"])
    rows = read_csv(written["runs.csv"])
    assert [int(r["domain.train_prompts"]) for r in rows] == [15, 60, 240]
    assert [int(r["instruct/final/correct"]) for r in rows] == [42, 55, 61]


def test_single_run_dir(tmp_path):
    run = make_run(tmp_path / "run", {}, [((40, 100), (90, 100)), ((45, 100), (88, 100))])
    written = write_report(run)
    assert set(written) == {"runs.csv", "runs.md", "accuracy_vs_iteration.png", "summary.json"}
    assert read_csv(written["runs.csv"])[0]["name"] == "run"
    assert_png(written["accuracy_vs_iteration.png"])


def test_unfinished_sweep_reports_what_exists(tmp_path):
    make_run(tmp_path / "0_merge.t=0.1", {"merge.t": "0.1"}, [((40, 100), (90, 100)), ((45, 100), (88, 100))])
    make_run(tmp_path / "1_merge.t=0.3", {"merge.t": "0.3"}, [((40, 100), (90, 100))], finished=False)
    written = write_report(tmp_path)
    assert "final_accuracy_vs_t.png" not in written  # only one finished t so far
    assert [r["status"] for r in read_csv(written["runs.csv"])] == ["finished", "unfinished"]
    assert_png(written["accuracy_vs_iteration.png"])


def test_list_valued_t_is_a_label(tmp_path):
    for job, t in enumerate(["[0.0,0.5,1.0]", "0.3"]):
        make_run(tmp_path / f"{job}_merge.t={t}", {"merge.t": t}, [((40, 100), (90, 100)), ((50, 100), (80, 100))])
    written = write_report(tmp_path)
    rows = read_csv(written["runs.csv"])
    assert rows[0]["merge.t"] == "[0.0, 0.5, 1.0]" and rows[1]["merge.t"] == "0.3"
    assert_png(written["final_accuracy_vs_t.png"])


def test_empty_dir(tmp_path, capsys):
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path)
    assert main([str(tmp_path)]) == 1


def test_iteration_table_unchanged():
    table = iteration_table([metrics_row(0, (191, 500), (497, 500))])
    assert "191/500  38.2% [34.0%, 42.5%]" in table and "   0 |" in table


def test_iteration_table_shows_the_unfinished_share_only_when_an_output_was():
    rows = [metrics_row(0, (191, 500), (497, 500)), metrics_row(1, (200, 500), (490, 500))]
    clean = iteration_table([{**r, "instruct/unfinished": 0.0, "thinking/unfinished": 0.0} for r in rows])
    assert "unfinished" not in clean
    rows[1] |= {"instruct/unfinished": 0.25, "thinking/unfinished": 0.0}
    lines = iteration_table(rows).splitlines()
    assert lines[0].count("unfinished") == 2
    assert lines[3].startswith("   1 |") and lines[3].split("|")[1].rstrip().endswith("3.0      25.0%")
    assert lines[3].split("|")[2].rstrip().endswith("49.0       0.0%")
    assert lines[2].split("|")[1].rstrip().endswith("0.0%")  # a row without the metric: none
    assert lines[-1].startswith("unfinished: share of outputs cut off by max_new_tokens")


# --- paired changes --------------------------------------------------------------------------------------------

def test_change_metrics_and_paired_block_from_the_per_question_files(tmp_path):
    run = make_run(tmp_path / "run", {}, [((40, 100), (90, 100)), ((45, 100), (88, 100)), ((50, 100), (88, 100))])
    assert change_metrics(run, 0) == {}
    step = change_metrics(run, 1)
    assert (step["instruct/change/flips_up"], step["instruct/change/flips_down"]) == (5, 0)
    assert step["instruct/change/delta"] == pytest.approx(0.05) and step["instruct/change/p_mcnemar"] == 0.0625
    assert (step["thinking/change/flips_up"], step["thinking/change/flips_down"]) == (0, 2)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    block = paired_block(run, history)
    inst = block["instruct"]
    assert (inst["before"], inst["after"], inst["n"], inst["flips_up"], inst["flips_down"]) == (0, 2, 100, 10, 0)
    assert inst["delta"] == pytest.approx(0.10) and inst["p_mcnemar"] == pytest.approx(2 / 1024)
    assert 0 < inst["ci_low"] < 0.10 < inst["ci_high"]
    flat = paired_run_summary({"paired": block})
    assert flat["delta/instruct/p_mcnemar"] == inst["p_mcnemar"] and flat["delta/thinking/flips_down"] == 2
    assert "delta/instruct/n" not in flat and "delta/instruct/before" not in flat


def test_paired_change_refuses_different_questions(tmp_path):
    run = make_run(tmp_path / "run", {}, [((4, 10), (9, 10)), ((5, 10), (9, 10))])
    (run / "iter_01" / "eval_instruct.jsonl").write_text(json.dumps({"id": "other", "correct": True}) + "\n")
    with pytest.raises(ValueError, match=r"iterations 0 and 1 of instruct: .*only after: \['other'\]"):
        change_metrics(run, 1)


def test_iteration_table_marks_changes_whose_interval_excludes_zero(tmp_path):
    run = make_run(tmp_path / "run", {}, [((40, 100), (90, 100)), ((70, 100), (89, 100))])
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    history = [{**row, **change_metrics(run, row["iteration"])} for row in history]
    table = iteration_table(history, paired_block(run, history)).splitlines()
    row1 = table[3]
    assert row1.startswith("   1 |") and "+30.0 [" in row1 and "]* +30/-0" in row1  # 30 up: marked
    assert "-1.0 [" in row1 and "]  +0/-1" in row1  # one question lost: not marked
    assert table[4].startswith("iteration 1 vs 0: instruct +30.0") and "McNemar p=1.86e-09" in table[4]
    assert "* the interval excludes 0" in table[6] and "flipped" in table[5]
    assert "*" not in table[2]  # iteration 0 has no change


def test_report_shows_the_paired_change_and_pools_seeds(sweep):
    runs = [load_run(r) for r in find_runs(sweep)]
    rows = runs_table(runs)
    first = rows[0]  # t=0.1, seed 0: 40 -> 50 of 100, 90 -> 81
    assert (first["instruct/delta/flips_up"], first["instruct/delta/flips_down"]) == (10, 0)
    assert first["instruct/delta/p_mcnemar"] == pytest.approx(2 / 1024) and first["instruct/delta/significant"]
    assert first["instruct/delta/ci_low"] > 0 and first["thinking/delta/ci_high"] < 0
    assert rows[4]["instruct/delta/flips_up"] == 7  # unfinished: from its files (40 -> 47)
    points = {p["point"]: p for p in points_table(rows, runs)}
    assert set(points) == {"merge.t=0.1", "merge.t=0.3"}
    p = points["merge.t=0.1"]
    assert p["seeds"] == 2 and p["instruct/seeds_significant"] == 2
    assert (p["instruct/delta_mean"], p["instruct/delta_lo"], p["instruct/delta_hi"]) == \
        pytest.approx((0.12, 0.10, 0.14))
    md = markdown_table(rows)
    assert "+10.0 [" in md and "]* +10/-0 p=0.002" in md and "* the interval excludes 0" in md
    assert "| merge.t=0.3 | 2 | +25.0 [+20.0, +30.0] (2/2 *) |" in points_markdown(list(points.values()))


def test_report_shows_macro_f1_and_the_majority_baseline_for_label_domains(tmp_path):
    run = make_run(tmp_path / "run", {}, [((12, 30), (15, 30)), ((14, 30), (15, 30))])
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in history:
        row |= {"instruct/macro_f1": 0.31, "thinking/macro_f1": 0.42, "eval/label_share/yes": 0.6,
                "eval/label_share/no": 0.3, "eval/label_share/maybe": 0.1, "eval/majority_baseline": 0.6}
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    row = runs_table([load_run(run)])[0]
    assert row["majority_baseline"] == 0.6 and row["instruct/final/macro_f1"] == 0.31
    md = markdown_table([row])
    assert "| macro-F1 final (inst; think) | majority baseline |" in md and "| 0.310; 0.420 | 60.0% |" in md
    assert "majority baseline: the accuracy of always answering" in md
    assert "majority baseline" not in markdown_table(runs_table([load_run(make_run(tmp_path / "b", {}, [((1, 2),
                                                                                                    (2, 2))]))]))


def test_a_run_with_only_its_baseline_shows_no_change(tmp_path):
    """iterations=0: baseline and final are the same evaluation; the report says `-`, not `+0.0 ... p=1`."""
    make_run(tmp_path / "0_iterations=0", {"iterations": "0"}, [((30, 50), (45, 50))], iterations=0)
    make_run(tmp_path / "1_iterations=1", {"iterations": "1"}, [((30, 50), (45, 50)), ((35, 50), (44, 50))])
    rows = runs_table([load_run(r) for r in find_runs(tmp_path)])
    assert rows[0]["instruct/delta/ci_low"] is None and rows[1]["instruct/delta/ci_low"] is not None
    only, extended = markdown_table(rows).splitlines()[2:4]
    assert only.count("| - |") == 2 and "p=1" not in only, only
    assert "p=" in extended
