"""Regenerate the GPU plans in README.md and docs/engines-and-gpus.md: `python -m benchmarks.plan_tables`.

Each block sits between `<!-- thinkswitch-plan ARGS -->` and `<!-- /thinkswitch-plan -->`, where ARGS are the
command's arguments (`experiment=paper_aime --cards 3070,h100`); the block is what `thinkswitch-plan ARGS`
prints. `tests/plan/test_plan.py` regenerates every block and compares it with the page.
"""

from __future__ import annotations

import re
import shlex
import sys

from benchmarks.common import ROOT
from thinkswitch.plan.cli import ALL_CARDS
from thinkswitch.plan.render import plan_text
from thinkswitch.sizing.cards import card

PAGE = ROOT / "docs" / "engines-and-gpus.md"
PAGES = (ROOT / "README.md", PAGE)
BLOCK = re.compile(r"(<!-- thinkswitch-plan (?P<args>[^>]*?) -->\n)(?P<body>.*?)(<!-- /thinkswitch-plan -->)", re.S)


def plan_for(args: str) -> str:
    """What `thinkswitch-plan ARGS` prints (only `--cards` and overrides are used in the docs)."""
    words = shlex.split(args)
    cards = list(ALL_CARDS)
    if "--cards" in words:
        i = words.index("--cards")
        cards = words[i + 1].split(",")
        words = words[:i] + words[i + 2:]
    return plan_text(words, [card(c) for c in cards])


def blocks(text: str) -> list[tuple[str, str]]:
    """(ARGS, body) of every plan block of a page."""
    return [(m["args"], m["body"]) for m in BLOCK.finditer(text)]


def regenerate(text: str) -> str:
    return BLOCK.sub(lambda m: m[1] + plan_for(m["args"]) + m[4], text)


def main() -> None:
    for page in PAGES:
        page.write_text(regenerate(page.read_text()))
        sys.stdout.write("".join(f"{page.name}: {args}: regenerated\n" for args, _ in blocks(page.read_text())))


if __name__ == "__main__":
    main()
