"""Named size presets: the backbones gatelab builds.

``tiny`` trains on a CPU in a minute; ``gpu-20m`` and ``gpu-125m`` (and their MoE versions) are
the GPU sizes between it and the paper, Qwen3-style like the paper's models (GQA, QK-norm, tied
embeddings, SwiGLU 3x wide); the ``paper-*`` shapes are the paper's models. Those need not
train here, but they build on the meta device, which is how the registry counts the
parameters a variant adds at the paper's scale.

Every GPU size keeps the paper's capacity controls legal: its query heads times 1.5
(``more-q-heads``) and its key/value heads times 2 (``more-kv-heads``) still group evenly.
"""

from __future__ import annotations

from gatelab.registry.backbone import Backbone, MoEConfig
from gatelab.registry.schema import VariantSpec

PRESETS: dict[str, Backbone] = {
    # The CI/debug model: about 0.9M parameters with a 4096-token vocabulary.
    "tiny": Backbone(
        n_layers=4, d_model=128, n_heads=4, n_kv_heads=2, head_dim=32, ffn_hidden=384,
        vocab_size=4096,
    ),
    # The tiny model with an MoE FFN, for the MoE rows (Table 1 row 4) at CPU scale.
    "tiny-moe": Backbone(
        n_layers=4, d_model=128, n_heads=4, n_kv_heads=2, head_dim=32, ffn_hidden=384,
        vocab_size=4096, moe=MoEConfig(n_experts=8, top_k=2, expert_hidden=96),
    ),
    # The candidate sink-forming CPU model (recipes/sink-cpu.yaml, which trains it on raw bytes):
    # the tiny shape without QK-norm, the most sink-prone shape measured within a 15-minute CPU
    # budget. It does NOT form a clear sink (layer f_attn at most ~5x the uniform share, one
    # head near 0.2): docs/sink-preset.md.
    "sink-cpu": Backbone(
        n_layers=4, d_model=128, n_heads=4, n_kv_heads=2, head_dim=32, ffn_hidden=384,
        vocab_size=4096, qk_norm=False,
    ),
    # The small GPU size (recipes/gpu-20m.yaml): 20.1M non-embedding parameters, 12 layers,
    # d_model 384, 8 q / 2 kv heads of 64 (q width 512 > d_model, as in Qwen3), FFN 1024.
    # The vocabulary is the recipe's BPE (8192: 3.1M tied embedding parameters).
    "gpu-20m": Backbone(
        n_layers=12, d_model=384, n_heads=8, n_kv_heads=2, head_dim=64, ffn_hidden=1024,
        vocab_size=8192,
    ),
    # gpu-20m with an MoE FFN for Table 1 (which is MoE): 16 experts top-4 of width 256, so the
    # active FFN (4 x 256) is gpu-20m's and a token costs about what it costs there; 62.6M
    # non-embedding parameters in all. `more-experts` makes it 20 experts top-8.
    "gpu-20m-moe": Backbone(
        n_layers=12, d_model=384, n_heads=8, n_kv_heads=2, head_dim=64, ffn_hidden=1024,
        vocab_size=8192, moe=MoEConfig(n_experts=16, top_k=4, expert_hidden=256),
    ),
    # The larger GPU size (recipes/gpu-125m.yaml): 125.9M non-embedding parameters, 16 layers,
    # d_model 768, 8 q / 2 kv heads of 128 (Qwen3's head width), FFN 2560.
    "gpu-125m": Backbone(
        n_layers=16, d_model=768, n_heads=8, n_kv_heads=2, head_dim=128, ffn_hidden=2560,
        vocab_size=8192,
    ),
    # gpu-125m with 16 experts top-4 of width 640: the active FFN is gpu-125m's (409M
    # non-embedding parameters in all).
    "gpu-125m-moe": Backbone(
        n_layers=16, d_model=768, n_heads=8, n_kv_heads=2, head_dim=128, ffn_hidden=2560,
        vocab_size=8192, moe=MoEConfig(n_experts=16, top_k=4, expert_hidden=640),
    ),
    # Table 1's 15A2B MoE: 24 layers, d_model 2048, 32 q / 4 kv heads, d_k 128, 128 experts
    # top-8. The expert width (768) and vocabulary are Qwen3-MoE's; the paper does not state them.
    "paper-moe-15a2b": Backbone(
        n_layers=24, d_model=2048, n_heads=32, n_kv_heads=4, head_dim=128, ffn_hidden=6144,
        vocab_size=151_936, tie_embeddings=False,
        moe=MoEConfig(n_experts=128, top_k=8, expert_hidden=768, aux_loss_coef=0.001),
    ),
    # Table 2's dense 1.7B shapes: 16 q / 8 kv heads, d_k 128, tied embeddings, QK-norm.
    "paper-dense-28l": Backbone(
        n_layers=28, d_model=2048, n_heads=16, n_kv_heads=8, head_dim=128, ffn_hidden=6144,
        vocab_size=151_936,
    ),
    "paper-dense-48l": Backbone(
        n_layers=48, d_model=1536, n_heads=16, n_kv_heads=8, head_dim=128, ffn_hidden=4608,
        vocab_size=151_936,
    ),
}

PAPER_TABLE1_PRESET = "paper-moe-15a2b"
"""The preset at which ``added_params_paper`` is counted."""


def get_preset(name: str) -> Backbone:
    """The backbone of a named preset; a clear error listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        from gatelab.registry.errors import closest

        raise KeyError(
            f"unknown size preset {name!r}{closest(name, PRESETS)}; known presets: "
            + ", ".join(PRESETS)
        ) from None


def tiny_preset_for(spec: VariantSpec) -> str:
    """The CPU-sized preset a spec builds at: ``tiny-moe`` where it needs experts."""
    return "tiny-moe" if spec.architecture.capacity.extra_experts else "tiny"
