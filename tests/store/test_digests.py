"""Digests catch every change to a stage's outputs (a truncated line, a flipped byte, a missing, added or rewritten
file) and name the file."""

import pytest

from tests.support.damage import CORRUPTIONS, make_outputs
from thinkswitch.store.digests import check, digest_outputs


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_digests_catch_every_change_and_name_the_file(tmp_path, corruption):
    root = tmp_path / "iter_01"
    names = make_outputs(root)
    record = digest_outputs(root, names)
    assert len(record["files"]) == 4 and check(root, record, names) is None
    damage, expected = CORRUPTIONS[corruption]
    damage(root)
    problem = check(root, record, names)
    assert problem is not None and expected in problem and problem.startswith("iter_01/"), problem
