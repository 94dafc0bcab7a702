"""`make gpu-carry`: the wheels a lent GPU machine without network needs to run `make gpu-check`, gathered here.

    python -m benchmarks.gpu_carry                      # into .whl/ (ignored by git), for Python 3.12 and CUDA 13
    python -m benchmarks.gpu_carry --python 3.11 --cuda 12 --dest /tmp/whl

The GPU machine brings its own Python, CUDA torch and the big scientific packages (`PROVIDED`); everything else
thinkswitch needs, at the versions installed in this checkout's `.venv` (the ones `make test` ran), is downloaded
as wheels for that Python: the closure of thinkswitch's requirements less `PROVIDED`. Two wheels are made here:
antlr4-python3-runtime 4.9.3 (Hydra's parser; no wheel on the index, built from its sdist, pure Python) and
bitsandbytes, cut to its CPU library and the CUDA libraries of one major version (the full wheel is 43 MB; the
machine's torch picks the library of its own CUDA build). The total is checked against what a device call carries.
On the machine, `benchmarks/gpu_device.sh` installs them beside its torch and runs the checks:

    bash benchmarks/gpu_device.sh --budget-s 420       # the device tool's run, with `.whl` named in its carry
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canonical
from packaging.utils import parse_wheel_filename

# Not needed by `make gpu-check`: W&B and what only it needs (the checks run with tracking disabled).
NOT_NEEDED = frozenset({
    "wandb", "googleapis-common-protos", "opentelemetry-api", "opentelemetry-exporter-http-transport",
    "opentelemetry-exporter-otlp-common", "opentelemetry-exporter-otlp-proto-common",
    "opentelemetry-exporter-otlp-proto-http", "opentelemetry-proto", "opentelemetry-sdk",
    "opentelemetry-semantic-conventions",
})
# On the GPU machine already (its image: CUDA torch and the scientific stack), the project itself, or not needed.
PROVIDED = NOT_NEEDED | {
    "torch", "numpy", "scipy", "pandas", "pyarrow", "matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver",
    "pillow", "sympy", "mpmath", "networkx", "setuptools", "protobuf", "sentencepiece", "thinkswitch",
}
FROM_SDIST = frozenset({"antlr4-python3-runtime"})  # no wheel on the index
CARRY_LIMIT = 56 * 2**20  # a device call carries 64 MiB with the working tree (~5 MiB)
PLATFORMS = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "manylinux1_x86_64")


def closure(root: str = "thinkswitch") -> dict[str, str]:
    """Every distribution `root` needs (extras left out), by canonical name, at its installed version."""
    found: dict[str, str] = {}
    todo = [root]
    while todo:
        name = canonical(todo.pop())
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # a requirement for another platform or Python, not installed here
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def unmet(pyproject: Path) -> list[str]:
    """What the importable distributions leave unmet of thinkswitch's requirements (`pyproject`) and theirs, one
    line each (extras left out): on a GPU machine, where its own packages meet the carried ones."""
    import tomllib

    todo = [("thinkswitch", line) for line in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]
    lines, seen = [], set()
    while todo:
        who, line = todo.pop()
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}) or canonical(req.name) in NOT_NEEDED:
            continue
        try:
            found = md.version(req.name)
        except md.PackageNotFoundError:
            lines.append(f"{req.name} missing ({who} needs {req})")
            continue
        if not req.specifier.contains(found.split("+")[0], prereleases=True):
            lines.append(f"{req.name} {found} where {who} asks {req.specifier}")
        if canonical(req.name) not in seen:
            seen.add(canonical(req.name))
            todo += [(req.name, r) for r in md.distribution(req.name).requires or []]
    return sorted(set(lines))


def to_carry(installed: dict[str, str]) -> dict[str, str]:
    """What the GPU machine lacks: `installed` less `PROVIDED`, at the installed versions (a local tag dropped)."""
    return {name: version.split("+")[0] for name, version in sorted(installed.items()) if name not in PROVIDED}


def cut_bitsandbytes(wheel: Path, cuda_major: str) -> Path:
    """The wheel without the native libraries another CUDA major version, ROCm or XPU would load (its RECORD kept
    in step), written over itself."""
    keep = re.compile(rf"libbitsandbytes_(cpu|cuda{cuda_major}\d*)\.(so|dylib|dll)$")
    cut = wheel.with_suffix(".cut")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(cut, "w", zipfile.ZIP_DEFLATED) as dst:
        dropped = {i.filename for i in src.infolist()
                   if re.search(r"libbitsandbytes_\w+\.(so|dylib|dll)$", i.filename) and not keep.search(i.filename)}
        for info in src.infolist():
            if info.filename in dropped:
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(x for x in lines if x.split(",")[0] not in dropped).encode()
            dst.writestr(info, data)
    cut.replace(wheel)
    return wheel


def download(pins: dict[str, str], dest: Path, python: str) -> None:
    """Wheels of `pins` for CPython `python` on x86-64 Linux into `dest`; the sdist-only ones built here."""
    binary = [f"{n}=={v}" for n, v in pins.items() if n not in FROM_SDIST]
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    platforms = [x for p in PLATFORMS for x in ("--platform", p)]
    subprocess.run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python,
                    "--implementation", "cp", *platforms, "-d", str(dest), *binary], check=True)
    built = [f"{n}=={v}" for n, v in pins.items() if n in FROM_SDIST]
    if built:
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-binary=:all:", "-w", str(dest), *built], check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make gpu-carry", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=Path(".whl"), help="where the wheels go (emptied first)")
    parser.add_argument("--python", default="3.12", help="the GPU machine's Python (default 3.12)")
    parser.add_argument("--cuda", default="13", help="its torch's CUDA major version (default 13)")
    parser.add_argument("--check", action="store_true", help="on the GPU machine, the wheels installed: list the "
                        "requirements its packages and the carried ones leave unmet (gpu_device.sh runs it)")
    args = parser.parse_args(argv)
    if args.check:
        problems = unmet(Path(__file__).resolve().parents[1] / "pyproject.toml")
        print("requirements: all met" if not problems else "requirements unmet (the checks run anyway):\n  "
              + "\n  ".join(problems))
        return 0
    pins = to_carry(closure())
    args.dest.mkdir(parents=True, exist_ok=True)
    for old in args.dest.glob("*.whl"):
        old.unlink()
    download(pins, args.dest, args.python)
    for wheel in args.dest.glob("bitsandbytes-*.whl"):
        cut_bitsandbytes(wheel, args.cuda)
    wheels = sorted(args.dest.glob("*.whl"))
    total = sum(w.stat().st_size for w in wheels)
    names = {parse_wheel_filename(w.name)[0] for w in wheels}
    missing = sorted(set(pins) - names)
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in {args.dest}/ for Python {args.python}, CUDA {args.cuda}"
          + (f"; missing: {', '.join(missing)}" if missing else ""))
    if missing or total > CARRY_LIMIT:
        print(f"error: {'wheels missing' if missing else f'over {CARRY_LIMIT / 2**20:.0f} MiB'}: "
              "a device call would not carry them", file=sys.stderr)
        return 1
    print(f"on the GPU machine: bash benchmarks/gpu_device.sh --budget-s 420   (carry: {args.dest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
