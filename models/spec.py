"""The family seam: what the engine knows about a model, and what a family declares to get served.

The engine reads only `ModelSpec` (never a family's config field names): adding a family means a
network file, a config reader that produces a `ModelSpec`, and one `Family` entry in
models/registry.py. Nothing in engine/ or server/ changes.

A family's config class provides:
    from_dict(raw: dict, source: str) -> config      (every field the network needs, or CheckpointError)
    model_spec() -> ModelSpec                          (stop ids are completed by the registry)
and its network class (an nn.Module built from that config) provides:
    forward(batch: PackedBatch, ops, logits_index) -> logits [M, spec.vocab_size]
    rope_tables(max_position, device)                  (built once by the runner for the admitted length)
    checkpoint_layout() -> {checkpoint key: Target}    (how the released files map onto the parameters)
A config may also provide `with_tokenizer(tokenizer) -> config`, called once the tokenizer is loaded,
for families whose special ids may come from the tokenizer (LLaDA-MoE's mask and EOS fallbacks), and
`generation_defaults(gen: dict) -> dict`, which reads a generation_config.json written for the
family's own sampler into SamplingParams keys (Dream's `alg`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    family: str  # registry name, e.g. "llada"
    mask_token_id: int
    # The id answers are padded with (the early-stop filler, banned by `logits_eos_inf`).
    eos_token_id: int
    # Logits the network returns per position = the classes the sampler chooses from (a family whose
    # head carries a mask channel or padding rows drops them in its forward). Prompt ids are below it.
    vocab_size: int
    max_sequence_length: int
    # K/V cache geometry (the approximate caches size their pool from these).
    n_layers: int
    n_kv_heads: int
    head_dim: int
    # Logits for position i come from the network's output at i - 1 (Dream, initialised from an AR model).
    shift_logits: bool = False
    # The network takes a time input: then the exact reuse of an unchanged canvas's logits is invalid.
    time_conditioned: bool = False
    # Special tokens (by text) that also end an answer (e.g. "<|eot_id|>"); resolved by the registry.
    stop_texts: tuple[str, ...] = ()
    # Every id that ends an answer, EOS first (filled at load from the config, tokenizer, generation_config).
    stop_token_ids: tuple[int, ...] = ()
    # The family's own sampling defaults (SamplingParams field -> value), under generation_config.json's:
    # e.g. RADD, released without one, samples with its continuous sampler.
    sampling_defaults: dict = field(default_factory=dict)


def hf_model_spec(config, family: str, **fields) -> ModelSpec:
    """The ModelSpec of a config under Hugging Face's names (vocab_size, max_position_embeddings,
    num_hidden_layers, num_key_value_heads, head_dim, mask/eos_token_id); `fields`: the rest."""
    return ModelSpec(
        family=family,
        mask_token_id=config.mask_token_id,
        eos_token_id=config.eos_token_id,
        vocab_size=config.vocab_size,
        max_sequence_length=config.max_position_embeddings,
        n_layers=config.num_hidden_layers,
        n_kv_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        **fields,
    )


@dataclass(frozen=True)
class Target:
    """Where one checkpoint tensor goes: a parameter, whole (index None) or a slice of a stacked one
    (e.g. expert 3's gate rows of a [E, 2I, d] parameter: index (3, slice(0, I)))."""

    param: str
    index: tuple | None = None
