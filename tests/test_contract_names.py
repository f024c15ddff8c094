"""Metric and artifact names live in the contract (``gatelab/metrics.py``, ``gatelab/contract.py``)
and nowhere else, and the contract says the truth about who writes and who reads each metric.

- The grep: no module of the installed namespace (registry/, model/, runners/, dashboards/,
  gatelab/; not tests/, docs/, benchmarks/, experiments/) holds a metric or artifact name as a
  string literal, nor a piece of a naming rule (``.layer``, ``val_loss_ctx``, ``x.pos``). Source
  is parsed with ``ast`` and only string constants are looked at (f-string pieces included);
  a string that is a statement of its own (a docstring, a field's docstring) documents and is
  left alone, so ``f_attn`` in double backticks there is fine. Names that are also ordinary
  words of other vocabularies (``WORDS``) cannot be told apart from those and are not looked
  for; the loop state's checkpoint keys are listed with their reason (``ALLOWED``).
- Written against declared: the runner's measurements, validation and throughput metrics of a
  tiny gated model, and its summary, are all names the contract declares; every declared
  metric and rule is named by the runner's modules (``gatelab.runners.run``), which write
  them; ``RunTracker.metric`` refuses an undeclared name at run time too.
- Read against declared (``READ_BY``): the metrics each reader's modules name (``Metric.X``, a
  rule's function, or a ``summary.<field>`` of a ``RunSummary``) are exactly those declared for
  that reader; a module outside the writers that names a metric is a declared reader; the
  claims file names only declared metrics.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch

from gatelab.contract import Artifact, InternalsArray
from gatelab.metrics import READ_BY, RULE_FUNCTIONS, Metric, Reader, Rule, is_declared
from gatelab.model.build import build_model
from gatelab.registry.backbone import Backbone
from gatelab.registry.loader import load_variant
from gatelab.run_summary import RunSummary
from gatelab.runners.run.evaluate import internals_during_training, val_metrics
from gatelab.runners.run.flops import peak_memory_metrics, throughput_metrics
from gatelab.runners.run.measurements import measure_internals

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"gatelab": "gatelab", "gatelab.registry": "registry", "gatelab.model": "model",
           "gatelab.runners": "runners", "gatelab.dashboards": "dashboards"}
"""Installed package -> the repository folder it is mapped from (pyproject.toml)."""
CONTRACT = frozenset({"gatelab.metrics", "gatelab.contract", "gatelab.run_summary"})
"""The modules that define the names (and the typed summary built from them)."""
WRITERS = "gatelab.runners.run"
"""The package that writes a training run's metrics."""

WORDS = frozenset({"lr", "steps", "tokens", "params", "vocab_size", "diverged_step", "report"})
"""Declared names that are also words of other vocabularies: recipe fields and document keys
(``lr``, ``steps``, ``tokens``), the backbone's ``vocab_size``, torch's param groups
(``params``), the run frame's tag columns (``lr``, ``diverged_step``), a CLI command
(``report``). The grep cannot tell them apart, so it does not look for them."""
FRAGMENTS = (".layer", "val_loss_ctx", "x.pos")
"""Pieces of the naming rules: a literal holding one builds or parses a name by hand."""
ALLOWED: dict[str, frozenset[str]] = {
    "runners/run/loop_state.py": frozenset({"max_grad_norm", "train_time_s"}),
    "runners/run/checkpoint.py": frozenset({"max_grad_norm", "train_time_s"}),
}
"""Literals equal to a metric's name that are not metric names: the loop state's checkpoint
keys (its attribute names), which checkpoints already written hold."""


def modules() -> dict[str, Path]:
    """Every module of the installed namespace, by dotted name."""
    found: dict[str, Path] = {}
    for package, folder in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(REPO / folder).with_suffix("").parts
                     if p != "__init__"]
            if package == "gatelab" and parts and parts[0] in ("registry", "model"):
                continue
            found[".".join([package, *parts])] = path
    return found


def literals(source: str) -> list[tuple[int, str]]:
    """``(line, value)`` of every string constant of ``source`` that is not a statement of its
    own (a docstring), in the order they appear."""
    tree = ast.parse(source)
    documenting = {id(node.value) for node in ast.walk(tree)
                   if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    found = [(node.lineno, node.col_offset, node.value) for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and isinstance(node.value, str)
             and id(node) not in documenting]
    return [(line, value) for line, _, value in sorted(found)]


def declared_names() -> frozenset[str]:
    names = {m.value for m in Metric} | {a.value for a in Artifact}
    return frozenset((names | {a.value for a in InternalsArray}) - WORDS)


def offending(source: str, allowed: frozenset[str] = frozenset()) -> list[str]:
    """The literals of ``source`` that are a declared name or hold a rule's fragment."""
    names = declared_names()
    return [f"{line}: {value!r}" for line, value in literals(source)
            if value not in allowed and (value in names or any(f in value for f in FRAGMENTS))]


def test_no_metric_or_artifact_name_is_a_literal_outside_the_contract() -> None:
    found = []
    for name, path in modules().items():
        if name in CONTRACT:
            continue
        rel = str(path.relative_to(REPO))
        found += [f"{rel}:{hit}" for hit in offending(path.read_text(),
                                                      ALLOWED.get(rel, frozenset()))]
    assert found == [], "use gatelab.metrics / gatelab.contract names:\n" + "\n".join(found)


def test_the_grep_sees_names_and_rule_pieces_but_not_documentation() -> None:
    source = '''
"""A module about ``val_loss`` and ``internals.npz``."""
X = "val_loss"
"""Its ``f_attn``."""
def f(m, i):
    """``gate_score.mean`` per layer."""
    return f"{m}.layer{i:02d}", "error.txt", f"val_loss_ctx{i}x", "train loss", "steps"
'''
    assert offending(source) == ["3: 'val_loss'", "7: '.layer'", "7: 'error.txt'",
                                 "7: 'val_loss_ctx'"]


TINY = Backbone(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, head_dim=8, ffn_hidden=64,
                vocab_size=50)


@pytest.fixture(scope="module")
def written() -> dict[str, float]:
    """What the runner logs of a tiny gated model besides the step metrics: its measurements,
    validation metrics, throughput and memory, and its summary."""
    torch.manual_seed(0)
    model = build_model(load_variant("g1-elementwise"), TINY)
    internals = measure_internals(model, [torch.randint(0, 50, (2, 12))])
    during = internals_during_training(internals)
    assert set(during) < set(internals.metrics())
    final = {"steps": 4, "tokens": 96, "params": model.num_params(), "vocab_size": 50,
             "loss_spikes": 0, "spike_score": 0.0, "max_grad_norm": 1.0, "train_time_s": 0.5,
             "val_loss_ctx1x": 3.9, "val_loss_ctx1x.pos0": 4.0,
             **val_metrics(3.9, 4.2), **internals.metrics(),
             **throughput_metrics(1000.0, 6e5, 1e12), **peak_memory_metrics(torch.device("cpu"))}
    summary = RunSummary.from_metrics(final)  # strict: every name is a summary's
    assert summary.to_metrics() == pytest.approx(final)
    return {**during, **summary.to_metrics()}


def test_every_name_the_runner_writes_is_declared(written: dict[str, float]) -> None:
    assert len(written) > 40
    assert [name for name in written if not is_declared(name)] == []
    assert {"gate_score.mean.layer01", "sink_head_max.layer00", "mfu", "peak_rss_gb"} <= set(
        written)


def _named(path: Path) -> set[str]:
    """What a module names of the contract: ``Metric.X`` members, the rules' functions and
    patterns, and the fields read as ``summary.<field>`` (as the metric they hold)."""
    tree = ast.parse(path.read_text())
    fields = {f.name for f in dataclasses.fields(RunSummary)} - {"named", "divergence"}
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "Metric":
                out.add(Metric[node.attr].value)
            elif (node.attr in fields and (
                    isinstance(node.value, ast.Name) and node.value.id == "summary"
                    or isinstance(node.value, ast.Attribute) and node.value.attr == "summary")):
                out.add(Metric[node.attr.upper()].value)
        if isinstance(node, ast.Name | ast.alias):
            name = node.id if isinstance(node, ast.Name) else node.name
            out |= {rule.value for rule, names in RULE_FUNCTIONS.items() if name in names}
    return out


def _reader_modules(reader: Reader) -> dict[str, Path]:
    return {name: path for name, path in modules().items()
            if name == reader.value or name.startswith(reader.value + ".")}


def test_the_runner_names_every_declared_metric_and_rule() -> None:
    """Declared ⊆ written: a declared metric no writer names is a reader waiting for nothing."""
    named = set().union(*(_named(p) for n, p in modules().items()
                          if n == WRITERS or n.startswith(WRITERS + ".")))
    declared = {m.value for m in Metric} | {r.value for r in Rule}
    assert declared - named == set()


@pytest.mark.parametrize("reader", [r for r in Reader if r is not Reader.MLFLOW_UI])
def test_each_reader_names_what_the_contract_declares_for_it(reader: Reader) -> None:
    mods = _reader_modules(reader)
    assert mods, f"{reader.value} is no module of gatelab"
    named = set().union(*(_named(p) for p in mods.values()))
    declared = {str(name) for name, readers in READ_BY.items() if reader in readers}
    assert named - declared == set(), f"{reader.value} reads these undeclared (READ_BY)"
    assert declared - named == set(), f"{reader.value} is declared to read these, never named"


def test_every_module_naming_a_metric_is_a_writer_or_a_declared_reader() -> None:
    readers = [r.value for r in Reader if r is not Reader.MLFLOW_UI]
    strays = [name for name, path in modules().items()
              if name not in CONTRACT and _named(path)
              and not any(name == p or name.startswith(p + ".") for p in (WRITERS, *readers))]
    assert strays == [], "declare these as readers in gatelab/metrics.py (Reader, READ_BY)"


def test_the_claims_file_names_declared_metrics_its_reader_reads() -> None:
    from gatelab.dashboards.tables.paper_tables import CONTEXT_GAP
    from gatelab.dashboards.verdicts.claims import load_claims

    metrics = {claim.metric for claim in load_claims()}
    dashboards = {str(m) for m, readers in READ_BY.items() if Reader.DASHBOARDS in readers}
    assert metrics - {CONTEXT_GAP} <= dashboards
    assert {Metric.VAL_LOSS, Metric.F_ATTN, Metric.M_ACT} <= metrics


def test_the_tracker_refuses_an_undeclared_metric() -> None:
    """Checked as the point is buffered, before anything is sent: the client's server (a port
    where nothing listens) is never reached."""
    from mlflow.tracking import MlflowClient

    from gatelab.runners.run.tracking import RunTracker

    uri = "http://127.0.0.1:9"
    tracker = RunTracker(MlflowClient(tracking_uri=uri), "run", uri)
    tracker.metric(Metric.VAL_LOSS, 1.0, 1)
    tracker.metric("f_attn.layer02", 0.5, 1)
    with pytest.raises(ValueError, match="'val_los' is not declared: add it to gatelab/metrics"):
        tracker.metric("val_los", 1.0, 1)
    assert tracker.recorded == {"val_loss": 1, "f_attn.layer02": 1}
