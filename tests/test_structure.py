"""The package's shape: layers that only import downward, no import cycles (function-level imports
included), no oversized functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "thinkswitch"

# Bottom to top. A module may import its own layer and the layers below it, never one above.
LAYERS = (
    ("errors", "config"),  # the vocabulary: error types and the typed config schema
    ("store",),  # run directory, paths, markers, stage cache, digests, partial results, atomic I/O
    ("data", "hub"),  # domains, sources, graders, the testbed task; hub ids resolved to the hub cache
    ("analysis",),  # statistics, records, tracking, report
    ("engines",),  # generation engines, their common ground, model loading, devices, chat format
    ("sizing",),  # memory, time and price arithmetic before anything loads; the run's memory plan
    ("stages",),  # generate, strip, distill, merge, evaluate
    ("testbed",),  # building and shipping the built-in pair
    ("validate", "setup", "loop", "cli", "plan"),  # the entry points and what they compose
)
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if module_name(p) != "__init__"}


def imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports (dotted below `thinkswitch`, e.g. `store.paths`)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("thinkswitch"):
                base = node.module.removeprefix("thinkswitch").lstrip(".")
                for a in node.names:  # from thinkswitch.stages import distill -> stages.distill
                    sub = f"{base}.{a.name}" if base else a.name
                    found.add(sub if sub in known else base)
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("thinkswitch.") for a in node.names if a.name.startswith("thinkswitch.")}
        graph[name] = found - {name, ""}
    return graph


def layer(module: str) -> int:
    return LAYER_OF[module.split(".")[0]]


def test_every_module_has_a_layer():
    assert not [m for m in modules() if m.split(".")[0] not in LAYER_OF]


def test_layers_import_downward_only():
    upward = [f"{m} imports {d}" for m, deps in imports().items() for d in deps if layer(d) > layer(m)]
    assert not upward, upward


def test_no_import_cycles():
    graph = imports()
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*stack, node, nxt])
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_no_function_over_60_lines_nor_class_over_90():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            limit = 90 if isinstance(node, ast.ClassDef) else 60
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    and node.end_lineno - node.lineno + 1 > limit:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_no_module_over_300_lines_without_a_reason():
    """A module longer than ~300 lines says in its docstring why it is one job ("Over 300 lines ...")."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if len(text.splitlines()) > 310 and "Over 300 lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{path.relative_to(PACKAGE)} ({len(text.splitlines())} lines)")
    assert not long, long


def test_no_module_over_400_lines():
    sizes = {path.relative_to(PACKAGE): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert not {str(p): n for p, n in sizes.items() if n > 400}


def test_stages_take_one_frozen_dataclass_of_inputs():
    """Each stage's one positional argument is its inputs (a frozen dataclass its keys derive from); the tools that
    run it (a generator, a device) are keyword-only."""
    import dataclasses
    import inspect
    import typing

    from thinkswitch.stages import distill, evaluate, generate, merge, strip

    for fn in (generate.generate_labels, strip.strip_generations, strip.gold_pairs, distill.distill, merge.merge,
               evaluate.evaluate):
        positional = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert [p.name for p in positional] == ["inputs"], fn.__name__
        kind = typing.get_type_hints(fn)["inputs"]
        assert dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen, fn.__name__


def test_no_stage_imports_omegaconf_or_hydra():
    for path in PACKAGE.rglob("*.py"):
        if path.name != "cli.py":
            text = path.read_text()
            assert "import omegaconf" not in text and "from omegaconf import OmegaConf" not in text, path.name
            assert "import hydra" not in text and "from hydra" not in text, path.name
