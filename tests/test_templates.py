"""Every domain's prompt template is rendered at validation, against a record of its mapped fields."""

from __future__ import annotations

import pytest

from tests.support.paths import CONF
from tests.support.shared import compose
from thinkswitch.data.domains import check_template, render_prompt
from thinkswitch.errors import ConfigError, DataError
from thinkswitch.validate import check_config

DOMAINS = sorted(p.stem for p in (CONF / "domain").glob("*.yaml"))


def test_there_are_domains_to_check():
    assert {"aime", "aime_local", "pubmedqa", "pubmedqa_local", "testbed"} <= set(DOMAINS)


@pytest.mark.parametrize("name", DOMAINS)
def test_every_domain_template_renders_against_its_fields(name):
    model = [] if name == "testbed" else ["model=local", "model.instruct=/x/i", "model.thinking=/x/t"]
    cfg = compose([f"domain={name}", *model])
    assert list(check_template(cfg.domain)) == []
    check_config(cfg)  # the whole validation passes too
    if cfg.domain.source == "testbed":
        return  # the testbed's task writes its own prompts
    for split in ("train", "eval"):
        fields = getattr(cfg.domain, split).fields
        text = render_prompt(cfg.domain.prompt_template, {"id": "0", **{k: f"<{k}>" for k in fields}}, split)
        assert "{{" not in text and "}}" not in text and "{0}" not in text


def test_the_aime_template_asks_for_a_boxed_answer():
    cfg = compose(["domain=aime", "model=local", "model.instruct=/x/i", "model.thinking=/x/t"])
    text = render_prompt(cfg.domain.prompt_template, {"problem": "What is 1+1?"}, "domain.eval")
    assert text == "What is 1+1?\n\nPlease reason step by step, and put your final answer within \\boxed{}."


@pytest.mark.parametrize("template, match", [
    ("{problem} \\boxed{}.", r"^domain\.prompt_template: has a positional field `\{\}`.*written twice"),
    ("{problem} {0}", r"^domain\.prompt_template: has a positional field"),
    ("{problem} }", r"^domain\.prompt_template: is not a valid format string \(Single '\}'"),
    ("{question}", r"^domain\.prompt_template uses \{question\}, but domain\.train\.fields maps only "
                   r"\['answer', 'id', 'problem'\]"),
])
def test_a_bad_template_is_one_line_before_anything_loads(template, match):
    cfg = compose(["domain=aime", "model=local", "model.instruct=/x/i", "model.thinking=/x/t",
                   f"domain.prompt_template='{template}'"])
    with pytest.raises(ConfigError, match=match) as caught:
        check_config(cfg)
    assert "\n" not in str(caught.value)
    with pytest.raises(DataError, match=r"prompt_template"):  # and where records are rendered, the same
        render_prompt(template, {"id": "1", "problem": "p", "answer": "1"}, "domain.eval")
