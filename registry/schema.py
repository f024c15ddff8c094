"""The typed schema of a variant spec: what one YAML file in ``ablations/`` may say.

A spec describes *architecture only*: where and how attention is gated, the paper's non-gate
controls, norm placement, the parameter-matched capacity controls, attention experts
(SwitchHead, Table 6) and the sink mitigations beside the gate (the attention normaliser, sink
tokens). Sizes live in
``registry/presets.py``; the training recipe and resources live elsewhere (see the README).
``gate: null`` is the baseline. Every field is validated on load (``registry/loader.py``).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from gatelab.registry.from_dict import inlined, is_inlined


class Position(enum.StrEnum):
    """Where the gate acts (the paper's Figure 1)."""

    G1 = "G1"  # SDPA output, per head, before concatenation and W_O
    G2 = "G2"  # value projection output
    G3 = "G3"  # key projection output (before QK-norm and RoPE)
    G4 = "G4"  # query projection output (before QK-norm and RoPE)
    G5 = "G5"  # after the output projection W_O (no heads exist here)


class Granularity(enum.StrEnum):
    ELEMENTWISE = "elementwise"  # one score per element of the gated tensor
    HEADWISE = "headwise"  # one score per head per token


class Sharing(enum.StrEnum):
    HEAD_SPECIFIC = "head-specific"
    HEAD_SHARED = "head-shared"  # scores averaged over heads: every head gets the same vector


class Combine(enum.StrEnum):
    MULTIPLICATIVE = "multiplicative"  # Y' = Y * act(X W)
    ADDITIVE = "additive"  # Y' = Y + act(X W)


class Activation(enum.StrEnum):
    SIGMOID = "sigmoid"
    SILU = "silu"
    NS_SIGMOID = "ns-sigmoid"  # 0.5 + 0.5 * sigmoid: non-linear, range [0.5, 1], not sparse
    IDENTITY = "identity"


class GateInput(enum.StrEnum):
    DEPENDENT = "dependent"  # act(X W), X: the gated token's normed block input
    INDEPENDENT = "independent"  # scores = act(P), P a learned (heads x width) parameter


class WeightInit(enum.StrEnum):
    NORMAL = "normal"  # normal(0, std), as the paper's released code initialises every linear
    ZERO = "zero"  # all zeros: a sigmoid gate starts at exactly 0.5


class SdpaControl(enum.StrEnum):
    """The paper's Table 3 non-gate controls, applied to the SDPA output (G1)."""

    GROUP_RMSNORM = "group-rmsnorm"  # RMSNorm over each head's output ("GroupNorm"), ~0 params
    SILU = "silu"  # Y' = SiLU(Y), parameter-free
    SCALE = "scale"  # Y' = 0.5 * Y: the default gate's value at init, no parameters, no input


class NormPlacement(enum.StrEnum):
    PRE = "pre"  # x + f(norm(x))
    SANDWICH = "sandwich"  # x + norm_out(f(norm(x))): the paper's Table 2 stabiliser


class Normaliser(enum.StrEnum):
    """What turns a query's attention scores into weights over the keys (``NormaliserSpec``).
    Every row's weights cover the visible keys only (causal)."""

    SOFTMAX = "softmax"  # the paper: exp(s_j) / sum_j exp(s_j)
    SINK_LOGIT = "sink-logit"  # exp(s_j) / (exp(b_h) + sum_j exp(s_j)), b_h learned per head
    SOFTMAX_PLUS_ONE = "softmax-plus-one"  # exp(s_j) / (1 + sum_j exp(s_j)): b_h fixed at 0
    CLIPPED_SOFTMAX = "clipped-softmax"  # clip((zeta - gamma) * softmax + gamma, 0, 1)
    SIGMOID = "sigmoid"  # sigmoid(s_j - log n), n the sequence length
    RELU = "relu"  # relu(s_j) / n, n the sequence length


class ExpertProjections(enum.StrEnum):
    """The projections SwitchHead replaces by routed experts."""

    V = "v"  # the value projection
    KV = "kv"  # the key and the value projections, each with its own router


class Family(enum.StrEnum):
    """The group a variant belongs to in ``gatelab list`` and the family tables, in that order
    (``VariantSpec.family``)."""

    GATES = "paper gates"  # a gate at G1..G5 (Tables 1 and 4, and gate variants of our own)
    CONTROLS = "paper controls"  # no gate: the baseline, capacity, norm and non-gate controls
    SWITCH_HEAD = "SwitchHead"  # attention experts (Table 6)
    SINK_MITIGATIONS = "sink mitigations"  # another normaliser or sink tokens (with any gate)


@dataclass(frozen=True)
class GateInit:
    """How the gate's parameters start."""

    weight: WeightInit | None = None
    """Initialiser of W (or of P for an input-independent gate). ``None``: the paper's default,
    normal(0, ``std``) for an input-dependent gate and zeros for an input-independent one."""
    std: float = 0.02
    """Standard deviation of the normal initialiser (unitless). Allowed: > 0 and <= 10
    (``rules.BOUNDS``, as every range below)."""
    bias: float | None = None
    """``None``: W has no bias (the paper). A number: W gets a bias parameter, initialised to
    that value (e.g. +2.0 keeps a small-width sigmoid gate near 0.88 at the start). Allowed:
    >= -100 and <= 100."""


@dataclass(frozen=True)
class GateSpec:
    """One gate inserted into softmax attention. Defaults are the paper's best gate (T1 row 5)."""

    position: Position = Position.G1
    granularity: Granularity = Granularity.ELEMENTWISE
    sharing: Sharing = Sharing.HEAD_SPECIFIC
    combine: Combine = Combine.MULTIPLICATIVE
    activation: Activation = Activation.SIGMOID
    input: GateInput = GateInput.DEPENDENT
    init: GateInit = field(default_factory=GateInit)


@dataclass(frozen=True)
class NormaliserSpec:
    """The attention normaliser. The default is the paper's softmax; the others are published
    ways of letting a head put its attention nowhere (see ``Normaliser``). Only softmax runs on
    the fused kernels (SDPA, flash-attn); the others run the explicit masked path whatever
    kernel the run names."""

    kind: Normaliser = Normaliser.SOFTMAX
    gamma: float | None = None
    """Clipped softmax's lower stretch (Bondarenko et al. 2023): weights below ``-gamma /
    (zeta - gamma)`` of the softmax become exactly 0. Required for ``clipped-softmax`` (they
    use -0.03), ``None`` for every other kind. Allowed: >= -1 and <= 0."""
    zeta: float | None = None
    """Clipped softmax's upper stretch: weights above ``(1 - gamma) / (zeta - gamma)`` become
    exactly 1. Required for ``clipped-softmax`` (1.0: no upper clipping), ``None`` for every
    other kind. Allowed: >= 1 and <= 2."""


@dataclass(frozen=True)
class SwitchHeadSpec:
    """Attention experts (SwitchHead, Csordás et al. 2024; the paper's Table 6): each kv head's
    value projection (and with ``kv`` its key projection) becomes ``n_experts`` projections of
    the same shape; a sigmoid router per kv head scores every expert from the token's normed
    input X, and the head's projection is the score-weighted sum of its ``top_k`` best-scored
    experts. With 1 expert and top-1 this is the G2 headwise sigmoid gate (``g2-headwise``).
    Routers are normal(0, 0.02) and bias-free, as the gate's projection."""

    projections: ExpertProjections = ExpertProjections.V
    n_experts: int = 1
    """Experts per kv head. Allowed: >= 1 and <= 64."""
    top_k: int = 1
    """Experts each token uses per kv head; at most ``n_experts``. Allowed: >= 1 and <= 64."""


@dataclass(frozen=True)
class Capacity:
    """The paper's parameter-matched controls (Table 1 rows 2-4), relative to the size preset,
    so that the same spec builds at every size."""

    q_heads_mult: float = 1.0
    """Multiplier on the number of query heads (T1 row 3: 1.5, i.e. 32 -> 48). Allowed: > 0
    and <= 64."""
    kv_heads_mult: float = 1.0
    """Multiplier on the number of key/value heads (T1 row 2: 2, i.e. 4 -> 8). Allowed: > 0
    and <= 64."""
    extra_experts: int = 0
    """Experts added to the MoE FFN, in total and in the top-k (T1 row 4: 4); needs an MoE
    size preset. Allowed: >= 0 and <= 1024."""


@dataclass(frozen=True)
class PaperResult:
    """A row of the paper that a spec reproduces, with the numbers the paper reports for it.
    ``None`` means the paper reports no such number for this row."""

    table: int
    row: int
    """Row number as printed in Table 1 and 3; for other tables, the row's order from the top."""
    name: str
    """The paper's own label of the row."""
    setting: str | None = None
    """Where one architecture has several rows: the paper's setting (layers, tokens, LR)."""
    added_params_m: float | None = None
    """The paper's "+Param" column, millions of parameters."""
    ppl: float | None = None
    """Average perplexity over the paper's test sets."""
    benchmarks: dict[str, float] = field(default_factory=dict)
    """Benchmark scores by name (hellaswag, mmlu, gsm8k, ceval), in percent."""
    mean_gate_score: float | None = None
    m_act: float | None = None
    f_attn: float | None = None
    max_lr: float | None = None
    outcome: str | None = None
    """A non-numeric result the paper reports (e.g. "diverged", "degraded")."""

    @property
    def label(self) -> str:
        """Short id such as ``T1-5``."""
        return f"T{self.table}-{self.row}"


@dataclass(frozen=True)
class Reference:
    """A publication a variant comes from, other than the gated-attention paper (whose rows
    are ``PaperResult``)."""

    authors: str
    """As cited: "Bondarenko et al." or every author."""
    year: int
    title: str
    venue: str | None = None
    """Where it appeared ("NeurIPS 2023"); ``None`` for a preprint or a blog post."""
    arxiv: str | None = None
    """The arXiv id ("2306.12929"), ``None`` if there is none."""
    url: str | None = None
    """Where to read it when it has no arXiv id."""


@dataclass(frozen=True)
class Architecture:
    """The part of a spec that changes the built model: what ``GatedLM`` and the run's
    identity take. The spec's descriptive fields (id, description, paper) are not in it."""

    gate: GateSpec | None = None
    """``None``: no gate (the baseline)."""
    sdpa_control: SdpaControl | None = None
    """A non-gate transform of the SDPA output (Table 3); exclusive with ``gate``."""
    norm: NormPlacement = NormPlacement.PRE
    """Where each block's attention and FFN are normed: before only (the paper's models), or
    before and after (sandwich norm, the paper's Table 2 stabiliser)."""
    capacity: Capacity = field(default_factory=Capacity)
    """More query or key/value heads, or more experts, than the size preset has (Table 1 rows
    2-4): applied to the size's backbone before anything is built."""
    param_match: bool = False
    """Narrow the FFN (the dense hidden width, or every expert's in an MoE) so the model's
    total parameter count equals, as nearly as a whole width allows, that of the same
    architecture at the same size without its gate, SDPA control, SwitchHead experts and sink
    tokens and with plain softmax (no learned sink logits); its ``capacity`` and ``norm`` are
    kept, so their parameters are not matched away (``gatelab.model.build``). The paper's dense
    runs match parameters this way. A spec with none of those keeps the FFN's width."""
    normaliser: NormaliserSpec = field(default_factory=NormaliserSpec)
    """The attention normaliser: the paper's softmax, or a sink mitigation (``Normaliser``)."""
    sink_tokens: int = 0
    """Learned tokens prepended to every sequence, each a learned embedding that passes
    through every layer and is dropped from the logits (StreamingLLM's pre-training sink
    token: 1). Allowed: >= 0 and <= 16."""
    switch_head: SwitchHeadSpec | None = None
    """``None``: plain projections. Attention experts on v (or k and v), Table 6."""


ABSORBED_BY_BACKBONE = frozenset({"capacity", "param_match"})
"""The ``Architecture`` fields whose whole effect is the backbone a spec resolves to (head
counts, expert counts, the FFN's width): a run's identity hashes that resolved backbone, and
so holds these through it, not by themselves (a spec that changes nothing by them shares its
hash with one that leaves them out). A run's identity hashes every other field of
``Architecture`` as itself (``gatelab.runners.run.setting``)."""


@dataclass(frozen=True)
class VariantSpec:
    """A variant of attention: one YAML file in ``ablations/``, a diff from its ``base``. The
    file is flat: the architecture's fields sit beside the descriptive ones."""

    id: str
    """The file's stem; lowercase letters, digits and hyphens."""
    description: str
    """What the variant changes, in a few words."""
    hypothesis: str
    """What the variant is expected to show, in one line."""
    base: str | None = None
    """The id of the spec this one is a diff from; ``None`` only for the root baseline. Only
    the base's architecture is inherited, never its descriptive fields."""
    architecture: Architecture = inlined(Architecture)
    """What the variant builds; its fields are written in the file itself, not under a key."""
    paper: tuple[PaperResult, ...] = ()
    """The paper's rows this variant reproduces, with their reported numbers."""
    sources: tuple[Reference, ...] = ()
    """Where a variant that is not the gated-attention paper's comes from."""

    @property
    def paper_row(self) -> str | None:
        """The first reproduced row's label (``T1-5``), ``None`` if none."""
        return self.paper[0].label if self.paper else None

    @property
    def family(self) -> Family:
        """Attention experts first, then another normaliser or sink tokens (a gate may come
        with them), then a gate, then the rest (the baseline and the controls)."""
        arch = self.architecture
        if arch.switch_head is not None:
            return Family.SWITCH_HEAD
        if arch.normaliser.kind is not Normaliser.SOFTMAX or arch.sink_tokens:
            return Family.SINK_MITIGATIONS
        return Family.GATES if arch.gate is not None else Family.CONTROLS


def architecture_dict(spec: VariantSpec | Architecture) -> dict[str, Any]:
    """The architecture (of a spec) as plain JSON-ready data, a key per field (enums as their
    values): what a spec's hash covers, ``gatelab list --json`` shows and a run logs."""
    arch = spec.architecture if isinstance(spec, VariantSpec) else spec
    plain = to_plain(arch)
    assert isinstance(plain, dict)
    return plain


def to_plain(value: object) -> object:
    """Any spec, recipe or sweep value as plain JSON-ready data: a dataclass as a mapping of its
    fields (an ``inlined`` field's own fields in its place, as the file writes them), enums
    as their values, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        plain: dict[str, object] = {}
        for f in dataclasses.fields(value):
            inner = to_plain(getattr(value, f.name))
            if is_inlined(f):
                assert isinstance(inner, dict)
                plain.update(inner)
            else:
                plain[f.name] = inner
        return plain
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value
