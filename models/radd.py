"""RADD (ML-GSAI/RADD, "reparameterized absorbing discrete diffusion"): config reader and network.

A RADD release is a `PyTorchModelHubMixin` directory: config.json is the training (hydra) config
dict the model was built from (`tokens`, `model` {hidden_size, n_blocks, n_heads, length, ...},
`noise`, `training`, ...; no `architectures` field), weights in model.safetensors, no tokenizer (the
model uses GPT-2's: pass `--tokenizer DIR`). `is_radd_config` is how the registry recognises one.

The network is a DiT-style encoder without any time input: embedding of tokens + 1 rows (the last,
id `tokens`, is the mask), blocks of x + attn_out(attention(rope(q), rope(k), v)) over LayerNorm,
then x + mlp over LayerNorm (Linear -> GELU(tanh) -> Linear, with biases); a final LayerNorm and a
linear head of tokens + 1 channels. The released forward takes a log-softmax over the first `tokens`
channels and leaves the mask channel raw: the head here drops the mask channel and returns the raw
logits of the `tokens` classes, whose softmax is that distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.errors import CheckpointError
from models.forward_batch import PackedBatch, attend
from models.layers import DiffusionLM, Weight, layer_norm, rotary
from models.spec import ModelSpec, Target

ARCHITECTURE = "RADD"  # the registry's name for a hub-mixin RADD directory (its config.json has none)
LAYER_NORM_EPS = 1e-5  # RADD's LayerNormWot calls F.layer_norm with its default eps
ROPE_THETA = 10000.0  # model/rotary.py: base 10000 over the whole head dim
MLP_RATIO = 4  # DDiTBlockWot's default; RADD never passes another

# `model.*` keys of the released configs (configs/model/{small,medium}_radd.yaml) that do not change
# the inference network: a name, SEDD's leftovers (cond_dim, scale_by_sigma: RADD has no time input),
# training switches and the training autocast dtype. Any other key is refused, not guessed at.
_IGNORED_MODEL_KEYS = {"name", "cond_dim", "scale_by_sigma", "dropout", "use_checkpoint", "dtype"}
_MODEL_KEYS = {"type", "hidden_size", "n_blocks", "n_heads", "length"}
_MODEL_TYPE = "ddit_wot"  # RADD's DDiT "without time"; SEDD's time-conditioned "ddit" is another network


def is_radd_config(raw: dict) -> bool:
    """A config.json written by RADD's hub mixin: no `architectures`, a `model` dict and `tokens`."""
    return "architectures" not in raw and isinstance(raw.get("model"), dict) and "tokens" in raw


@dataclass(frozen=True)
class RADDConfig:
    tokens: int  # GPT-2's 50257: classes the model predicts; the mask id is `tokens`
    hidden_size: int
    n_blocks: int
    n_heads: int
    length: int  # the training sequence length (1024): the longest canvas served

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    @property
    def mask_token_id(self) -> int:
        return self.tokens

    @property
    def eos_token_id(self) -> int:
        """GPT-2's `<|endoftext|>`, the last id of its vocabulary."""
        return self.tokens - 1

    def model_spec(self) -> ModelSpec:
        """Logits over the `tokens` classes (mask channel dropped), no time input (the exact reuse of
        an unchanged canvas's output holds), no chat template; RADD's own sampler (continuous time,
        with that reuse) is the default."""
        return ModelSpec(
            family="radd",
            mask_token_id=self.mask_token_id,
            eos_token_id=self.eos_token_id,
            vocab_size=self.tokens,
            max_sequence_length=self.length,
            n_layers=self.n_blocks,
            n_kv_heads=self.n_heads,
            head_dim=self.head_dim,
            sampling_defaults={"sampler": "continuous"},
        )

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> RADDConfig:
        model = raw.get("model")
        if not isinstance(model, dict):
            raise CheckpointError(f"{source}: field 'model' must be an object (RADD's model config)")
        unknown = sorted(set(model) - _MODEL_KEYS - _IGNORED_MODEL_KEYS)
        if unknown:
            raise CheckpointError(f"{source}: unsupported field 'model.{unknown[0]}' (not part of RADD)")
        if model.get("type") != _MODEL_TYPE:
            raise CheckpointError(
                f"{source}: model.type={model.get('type')!r} is not supported (only {_MODEL_TYPE!r}, "
                "RADD's network without time input)"
            )
        tokens = _positive_int(raw, "tokens", source, "tokens")
        sizes = {k: _positive_int(model, k, source, f"model.{k}") for k in sorted(_MODEL_KEYS - {"type"})}
        if sizes["hidden_size"] % sizes["n_heads"]:
            raise CheckpointError(
                f"{source}: model.n_heads {sizes['n_heads']} must divide model.hidden_size "
                f"{sizes['hidden_size']}"
            )
        if (sizes["hidden_size"] // sizes["n_heads"]) % 2:
            raise CheckpointError(f"{source}: the head dim must be even for rotary embeddings")
        if tokens < 2:
            raise CheckpointError(f"{source}: field 'tokens' must be at least 2, got {tokens}")
        return cls(tokens=tokens, **sizes)


def _positive_int(d: dict, key: str, source: str, name: str) -> int:
    if key not in d or d[key] is None:
        raise CheckpointError(f"{source}: missing required field '{name}'")
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"{source}: field '{name}' must be a positive integer, got {value!r}")
    return value


class RADDBlock(nn.Module):
    """DDiTBlockWot: x + attn_out(attn(rope(q), rope(k), v)) over norm1(x), then x + mlp(norm2(x))."""

    def __init__(self, cfg: RADDConfig):
        super().__init__()
        d = cfg.hidden_size
        self.cfg = cfg
        self.norm1 = Weight(d, bias=True)
        self.attn_qkv = nn.Linear(d, 3 * d, bias=False)  # rows: [all Q | all K | all V], head-major
        self.attn_out = nn.Linear(d, d, bias=False)
        self.norm2 = Weight(d, bias=True)
        self.mlp = nn.Sequential(
            nn.Linear(d, MLP_RATIO * d), nn.GELU(approximate="tanh"), nn.Linear(MLP_RATIO * d, d)
        )

    def forward(self, x, batch: PackedBatch, ops, rope: tuple[torch.Tensor, torch.Tensor], layer: int):
        cfg, n = self.cfg, x.shape[0]
        qkv = self.attn_qkv(layer_norm(x, self.norm1, LAYER_NORM_EPS)).view(n, 3, cfg.n_heads, cfg.head_dim)
        q = rotary(ops, qkv[:, 0].contiguous(), batch.positions, rope)
        k = rotary(ops, qkv[:, 1].contiguous(), batch.positions, rope)
        a = attend(ops, q, k, qkv[:, 2].contiguous(), batch, layer)  # V is not rotated
        x = x + self.attn_out(a.reshape(n, cfg.hidden_size))
        return x + self.mlp(layer_norm(x, self.norm2, LAYER_NORM_EPS))


class VocabEmbed(nn.Module):
    """RADD's EmbeddingLayer: a bare [tokens + 1, d] parameter named `embedding`."""

    def __init__(self, rows: int, d: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(rows, d))


class OutputLayer(nn.Module):
    """DDitFinalLayerWot: LayerNorm then a linear head of tokens + 1 channels (the last: mask)."""

    def __init__(self, d: int, rows: int):
        super().__init__()
        self.norm_final = Weight(d, bias=True)
        self.linear = nn.Linear(d, rows)


class RADDModel(DiffusionLM):
    def __init__(self, cfg: RADDConfig):
        super().__init__()
        self.cfg = cfg
        self.rope_theta, self.rotary_dim = ROPE_THETA, cfg.head_dim
        self.max_sequence_length = cfg.length
        self.vocab_embed = VocabEmbed(cfg.tokens + 1, cfg.hidden_size)
        self.blocks = nn.ModuleList(RADDBlock(cfg) for _ in range(cfg.n_blocks))
        self.output_layer = OutputLayer(cfg.hidden_size, cfg.tokens + 1)

    def checkpoint_layout(self) -> dict[str, Target | None]:
        """Parameters under their own names; `rotary_emb.inv_freq` (a persistent buffer the mixin
        saves: 1 / 10000^(2i / head_dim)) is accepted and ignored, the tables are rebuilt."""
        layout: dict[str, Target | None] = {name: Target(name) for name, _ in self.named_parameters()}
        layout["rotary_emb.inv_freq"] = None
        return layout

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(input_ids, self.vocab_embed.embedding)

    def layers(self) -> nn.ModuleList:
        return self.blocks

    def head(self, x: torch.Tensor, ops) -> torch.Tensor:
        """Raw logits [M, tokens]: the mask channel (the head's last row) is never computed."""
        out, tokens = self.output_layer, self.cfg.tokens
        x = layer_norm(x, out.norm_final, LAYER_NORM_EPS)
        return nn.functional.linear(x, out.linear.weight[:tokens], out.linear.bias[:tokens])
