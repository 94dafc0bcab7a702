"""`make gpu-carry`'s choice of wheels (the closure of thinkswitch's requirements less what a GPU machine brings), its
cut of bitsandbytes, and `gpu_device.sh` without them. The download itself needs the package index: run by hand."""

import subprocess
import zipfile
from importlib.metadata import version

from benchmarks.gpu_carry import PROVIDED, closure, cut_bitsandbytes, to_carry, unmet
from tests.support.paths import ROOT


def test_the_carry_is_what_thinkswitch_needs_at_the_tested_versions_less_what_the_machine_brings():
    needed = closure()
    carry = to_carry(needed)
    for name in ("transformers", "trl", "peft", "bitsandbytes", "mergekit", "hydra-core", "omegaconf",
                 "antlr4-python3-runtime", "math-verify", "datasets", "accelerate"):
        assert carry[name] == version(name).split("+")[0], name
    assert "torch" in needed and not PROVIDED & set(carry)
    assert "thinkswitch" not in carry and "wandb" not in carry


def test_bitsandbytes_is_cut_to_the_cpu_and_one_cuda_major_with_its_record_in_step(tmp_path):
    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    libs = ["cpu", "cuda118", "cuda128", "cuda130", "cuda132", "rocm64", "xpu2026"]
    files = ["bitsandbytes/__init__.py"] + [f"bitsandbytes/libbitsandbytes_{lib}.so" for lib in libs]
    with zipfile.ZipFile(wheel, "w") as z:
        for name in files:
            z.writestr(name, b"x" * 10)
        z.writestr("bitsandbytes-0.50.2.dist-info/RECORD", "".join(f"{n},sha256=x,10\n" for n in files))
    cut_bitsandbytes(wheel, "13")
    with zipfile.ZipFile(wheel) as z:
        kept = sorted(n for n in z.namelist() if not n.endswith("RECORD"))
        record = [line.split(",")[0] for line in z.read("bitsandbytes-0.50.2.dist-info/RECORD").decode().splitlines()]
    assert kept == sorted(["bitsandbytes/__init__.py"] + [f"bitsandbytes/libbitsandbytes_{lib}.so"
                                                          for lib in ("cpu", "cuda130", "cuda132")])
    assert record == [n for n in files if n in kept]


def test_the_device_script_without_wheels_says_what_to_run(tmp_path):
    proc = subprocess.run(["bash", "benchmarks/gpu_device.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "WHEELS": str(tmp_path / "none")})
    assert proc.returncode == 2
    none = tmp_path / "none"
    assert proc.stderr.strip() == f"error: no wheels in {none}/: run 'make gpu-carry' here first and carry {none}"


def test_the_machines_check_names_each_unmet_requirement_and_passes_this_venv(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["packaging>=999", "no-such-dist-xyz>=1", "pytest"]\n')
    assert unmet(pyproject) == ["no-such-dist-xyz missing (thinkswitch needs no-such-dist-xyz>=1)",
                                f"packaging {version('packaging')} where thinkswitch asks >=999"]
    assert unmet(ROOT / "pyproject.toml") == []  # what make install made meets every requirement
