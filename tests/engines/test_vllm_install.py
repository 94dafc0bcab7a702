"""`.venv-vllm` as installed: the build's platform and spec recorded, a changed `VLLM=` reinstalls (Makefile, read
with `make -n`), and vLLM + NF4 refused on every device (vLLM 0.32 has no bitsandbytes quantization)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.support.paths import ROOT as REPO
from tests.support.shared import compose
from thinkswitch.errors import ConfigError

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _make_n(venv, *args) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM", "MAKE"))}
    out = subprocess.run(["make", "-n", "-C", str(REPO), "install-vllm", f"VLLM_VENV={venv}", *args],
                         capture_output=True, text=True, env=env, check=True)
    return out.stdout


@pytest.fixture
def installed(tmp_path):
    """A .venv-vllm that make takes as installed and described (files newer than the worker's source)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for name in (".installed", "engine_args.json"):
        (venv / name).write_text("{}")
        os.utime(venv / name, (2**31 - 1, 2**31 - 1))
    return venv


def test_a_changed_vllm_spec_reinstalls_and_a_plain_install_keeps_the_build(installed):
    assert "rm -rf" not in _make_n(installed)  # make test's plain install-vllm keeps a CUDA build in place
    cuda = ["VLLM=vllm==0.32.0", "VLLM_TORCH=", "VLLM_REMOVE="]
    assert f"rm -rf {installed}" in _make_n(installed, *cuda)  # no spec recorded: what is there is unknown
    (installed / "spec").write_text("vllm==0.32.0 torch: remove:\n")
    assert "rm -rf" not in _make_n(installed, *cuda)
    plan = _make_n(installed, "VLLM=vllm==0.33.0", "VLLM_TORCH=", "VLLM_REMOVE=")
    assert f"rm -rf {installed}" in plan and "vllm==0.33.0" in plan and "spec" in plan


def test_auto_takes_only_a_cuda_build_and_nf4_is_refused_everywhere(tmp_path, monkeypatch):
    from thinkswitch.engines.base import resolve_backend
    from thinkswitch.validate import check_config

    monkeypatch.setenv("THINKSWITCH_VLLM_VENV", str(tmp_path))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text("")
    record = {"vllm_version": "0.32.0", "fields": {"max_model_len": ["int"]}, "platform": "cpu",
              "quantizations": ["awq", "fp8", "gptq"]}
    (tmp_path / "engine_args.json").write_text(json.dumps(record))
    assert resolve_backend("auto", "cuda") == "cb"
    (tmp_path / "engine_args.json").write_text(json.dumps({**record, "platform": "cuda"}))
    assert resolve_backend("auto", "cuda") == "vllm"
    for device in ("cpu", "cuda"):
        with pytest.raises(ConfigError, match=r"generation\.quantization=nf4: .*no bitsandbytes.*awq, fp8, gptq.*"
                                              r"generation\.backend=cb or hf"):
            check_config(compose(["generation.backend=vllm", "generation.quantization=nf4", f"device={device}"]))


def test_the_install_records_platform_and_quantizations_of_the_installed_vllm():
    """`make install-vllm` (which `make test` runs first) wrote the worker's `--describe` record."""
    record_file = REPO / ".venv-vllm" / "engine_args.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if "platform" not in record:
        pytest.skip("no .venv-vllm described by this version (make install-vllm)")
    assert record["platform"] in ("cpu", "cuda") and "max_model_len" in record["fields"]
    assert "bitsandbytes" not in record["quantizations"] and "awq" in record["quantizations"]
