"""A verdict is one enum member: its text, its key (the summary run's metric) and its CSS class
(the report's colour) are derived from it, distinct, and readable back."""

from __future__ import annotations

import re

import pytest

from gatelab.verdict import Verdict


def test_each_verdict_has_its_own_text_key_and_css_class() -> None:
    for attribute in ("value", "key", "css_class"):
        values = [getattr(v, attribute) for v in Verdict]
        assert len(set(values)) == len(values), attribute
    assert Verdict.NOT_REPRODUCED.key == "not_reproduced"
    assert Verdict.CONFOUNDED.css_class == "v-confounded"
    assert all(re.fullmatch(r"[a-z_]+", v.key) and re.fullmatch(r"v-[a-z-]+", v.css_class)
               for v in Verdict)


def test_a_verdict_reads_back_from_its_text_and_says_whether_it_is_open() -> None:
    assert Verdict("reproduced, but a control gains as much") is Verdict.CONFOUNDED
    assert {v for v in Verdict if v.open} == {Verdict.INCONCLUSIVE, Verdict.UNDECIDED}
    with pytest.raises(ValueError, match="reproduced-ish"):
        Verdict("reproduced-ish")
