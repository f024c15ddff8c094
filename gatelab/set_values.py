"""``--set FIELD=VALUE``, the override flag of ``train``, ``new`` and ``sweep``: one item split
into its field and its value, read as YAML (``steps=500``, ``seeds=[0,1]``,
``data.source=my.txt``), and refused in one line naming the ``--set`` when it is not one (no
``=``, no field, or a value that is not YAML, such as an unclosed quote or bracket). The CLI
parses ``train``'s and ``new``'s items with ``parse_set``; the sweep's spec
(``runners/sweep/spec.py``) checks its items with ``yaml_problem`` before OmegaConf merges
them."""

from __future__ import annotations

import yaml


def yaml_problem(err: yaml.YAMLError) -> str:
    """What is wrong with a YAML text, in a few words (``while parsing a flow sequence, expected
    ',' or ']', but the value ended``)."""
    problem = getattr(err, "problem", None)
    context = getattr(err, "context", None)
    text = ", ".join(p for p in (context, problem) if p) or str(err).splitlines()[0]
    return text.replace("but got '<stream end>'", "but the value ended")


def parse_set(item: str, example: str) -> tuple[str, object]:
    """``item`` (``FIELD=VALUE``) as its field and its YAML value; ``ValueError`` naming the
    ``--set`` otherwise (``example``: a good item, for the message)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set {item}: expected FIELD=VALUE, e.g. --set {example}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ValueError(f"--set {item}: {value!r} is not a YAML value ({yaml_problem(err)}): "
                         "close its quote or bracket, or quote the whole value") from None
