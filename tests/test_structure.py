"""The package's shape: no import cycles (function-level imports included), no oversized functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "thinkswitch"


def imports() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.glob("*.py"):
        name = path.stem
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("thinkswitch"):
                parts = node.module.split(".")
                if len(parts) > 1:
                    found.add(parts[1])
                else:  # from thinkswitch import a, b
                    found |= {a.name for a in node.names if (PACKAGE / f"{a.name}.py").exists()}
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("thinkswitch.")}
        graph[name] = found - {name}
    return graph


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


def test_no_function_or_class_over_90_lines():
    long = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.end_lineno - node.lineno + 1 > 90:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_stages_take_keyword_arguments_only():
    from thinkswitch import distill, evaluate, generate, merge, strip

    for fn in (generate.generate_labels, strip.strip_generations, distill.distill, merge.merge, evaluate.evaluate):
        code = fn.__code__
        assert code.co_argcount == 0 and code.co_kwonlyargcount > 0, fn.__name__


def test_no_stage_imports_omegaconf_or_hydra():
    for path in PACKAGE.glob("*.py"):
        if path.name != "cli.py":
            text = path.read_text()
            assert "import omegaconf" not in text and "from omegaconf import OmegaConf" not in text, path.name
            assert "import hydra" not in text and "from hydra" not in text, path.name
