"""W&B never blocks a run: online without a reachable server falls back to offline."""

import time

from tests.support.shared import compose
from thinkswitch.analysis.tracking import Tracker


def test_offline_run_logs_by_iteration(tmp_path):
    cfg = compose(["tracking.mode=offline"])
    tracker = Tracker(cfg.tracking, tmp_path, {"merge": {"t": 0.3}})
    assert tracker.mode == "offline"
    tracker.log(0, {"instruct/accuracy": 0.5})
    tracker.log(1, {"instruct/accuracy": 0.6, "train/loss": None})
    tracker.finish({"instruct/accuracy": 0.6}, failed=False)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert (tmp_path / "wandb_run_id").read_text().strip() in runs[0].name


def test_online_without_server_falls_back_to_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = compose(["tracking.mode=online", "tracking.init_timeout=5"])
    t0 = time.perf_counter()
    tracker = Tracker(cfg.tracking, tmp_path, {})
    assert tracker.mode == "offline"
    assert time.perf_counter() - t0 < 60
    tracker.log(0, {"x": 1})
    tracker.finish(None, failed=True)
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_disabled_writes_nothing(tmp_path):
    tracker = Tracker(compose(["tracking.mode=disabled"]).tracking, tmp_path, {})
    tracker.log(0, {"x": 1})
    tracker.finish({"x": 1}, failed=False)
    assert tracker.mode == "disabled" and not (tmp_path / "wandb").exists()


def test_wandb_failing_mid_run_does_not_stop_the_run(tmp_path):
    tracker = Tracker(compose(["tracking.mode=offline"]).tracking, tmp_path, {})

    def broken(*args, **kwargs):
        raise ConnectionError("W&B went away")

    tracker.run.log = broken
    tracker.log(1, {"instruct/accuracy": 0.5})  # warns, does not raise
    tracker.finish({"x": 1}, failed=False)
    assert tracker.run is None
