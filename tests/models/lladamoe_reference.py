"""LLaDA-MoE's published forward and LLaDA's sampler, restated in plain torch for the tests.

Written from the facts in model-formats.md section 2 (OLMoE-style block, per-head QK RMSNorm before
rotate_half RoPE on the first int(head_dim * partial_rotary_factor) channels, softmax router in fp32
over all experts (+ expert_bias), top-k without renormalisation, a loop over tokens and their experts,
shared expert on MoE layers), reading the tensors straight from the checkpoint files: one sequence
at a time, no packing, no ops table, nothing from models/ or kernels/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

# Every option the release's config may set, on: a dense layer between two MoE layers, a shared
# expert, router expert bias, half the head rotated, q/k/v biases, a clamp that bites.
FEATURED = {
    "num_hidden_layers": 3,
    "moe_layer_freq": [1, 0, 1],
    "shared_expert_intermediate_size": 48,
    "moe_router_enable_expert_bias": True,
    "partial_rotary_factor": 0.5,
    "attention_bias": True,
    "clip_qkv": 1.0,
}


def read_checkpoint(model_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json, every tensor of every shard in fp32)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    sd = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        sd.update({k: v.float() for k, v in load_file(str(shard)).items()})
    return cfg, sd


def _expert(sd, prefix: str, e: int, fused: bool):
    """(gate [I, H], up [I, H], down [H, I]) of expert e."""
    if fused:
        w1, w2 = sd[prefix + "w1"][e], sd[prefix + "w2"][e]
        half = w1.shape[0] // 2
        return w1[:half], w1[half:], w2
    x = f"{prefix}experts.{e}."
    return sd[x + "gate_proj.weight"], sd[x + "up_proj.weight"], sd[x + "down_proj.weight"]


def route(sd, prefix: str, h: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token: (weights [T, k], experts [T, k]) = top-k of softmax(gate h) (+ expert_bias)."""
    scores = torch.softmax(h @ sd[prefix + "gate.weight"].T, dim=-1, dtype=torch.float32)
    if prefix + "expert_bias" in sd:
        scores = scores + sd[prefix + "expert_bias"]
    return torch.topk(scores, top_k, dim=-1)


def plain_logits(cfg: dict, sd: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """[T] ids of one sequence -> [T, V] logits."""
    t, d = len(ids), cfg["hidden_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps = d // nh, cfg["rms_norm_eps"]
    rot = int(hd * cfg["partial_rotary_factor"])
    fused = cfg["architectures"][0] == "FusedLLaDAMoEModelLM"

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, rot, 2, dtype=torch.float) / rot))
    freqs = torch.outer(torch.arange(t, dtype=torch.float), inv_freq)
    cos, sin = torch.cat((freqs, freqs), -1).cos(), torch.cat((freqs, freqs), -1).sin()

    def rope(x):  # [heads, T, hd]: rotate_half on the first `rot` channels
        turned, kept = x[..., :rot], x[..., rot:]
        x1, x2 = turned.chunk(2, dim=-1)
        return torch.cat((turned * cos + torch.cat((-x2, x1), -1) * sin, kept), dim=-1)

    def swiglu(h, prefix):
        gate, up = h @ sd[prefix + "gate_proj.weight"].T, h @ sd[prefix + "up_proj.weight"].T
        return (F.silu(gate) * up) @ sd[prefix + "down_proj.weight"].T

    x = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."

        def linear(h, name, p=p):
            bias = sd.get(f"{p}self_attn.{name}.bias")
            y = h @ sd[f"{p}self_attn.{name}.weight"].T
            return y if bias is None else y + bias

        h = rms(x, sd[p + "input_layernorm.weight"])
        q, k, v = linear(h, "q_proj"), linear(h, "k_proj"), linear(h, "v_proj")
        if cfg["qk_layernorm"]:
            q = rms(q.reshape(-1, hd), sd[p + "self_attn.q_norm.weight"]).reshape(t, -1)
            k = rms(k.reshape(-1, hd), sd[p + "self_attn.k_norm.weight"]).reshape(t, -1)
        if cfg["clip_qkv"] is not None:
            q, k, v = (z.clamp(-cfg["clip_qkv"], cfg["clip_qkv"]) for z in (q, k, v))
        q = rope(q.view(t, nh, hd).transpose(0, 1))
        k = rope(k.view(t, nkv, hd).transpose(0, 1)).repeat_interleave(nh // nkv, dim=0)
        v = v.view(t, nkv, hd).transpose(0, 1).repeat_interleave(nh // nkv, dim=0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1) @ v
        x = x + linear(att.transpose(0, 1).reshape(t, d), "o_proj")
        h = rms(x, sd[p + "post_attention_layernorm.weight"])
        if cfg["moe_layer_freq"][i] == 0:
            x = x + swiglu(h, p + "mlp.")
            continue
        weights, experts = route(sd, p + "mlp.", h, cfg["num_experts_per_tok"])
        out = torch.zeros_like(h)
        for tok in range(t):
            for w, e in zip(weights[tok].tolist(), experts[tok].tolist(), strict=True):
                gate, up, down = _expert(sd, p + "mlp.", e, fused)
                out[tok] += w * (down @ (F.silu(gate @ h[tok]) * (up @ h[tok])))
        if cfg["shared_expert_intermediate_size"] is not None:
            out = out + swiglu(h, p + "shared_expert.")
        x = x + out
    head = sd["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else sd["lm_head.weight"]
    return rms(x, sd["model.norm.weight"]) @ head.T


def reference_generate(
    cfg, sd, mask_id: int, prompt: list[int], steps: int, gen_length: int, block_length: int, cfg_scale=0.0
) -> list[int]:
    """LLaDA's sampler at temperature 0 (low-confidence remasking, fixed per-block schedule,
    unsupervised CFG) over `plain_logits`; EOS is not special."""
    x = torch.tensor(list(prompt) + [mask_id] * gen_length)
    p, steps_per_block = len(prompt), steps // (gen_length // block_length)
    for b in range(gen_length // block_length):
        end = p + (b + 1) * block_length
        n = int((x[p + b * block_length : end] == mask_id).sum())
        for i in range(steps_per_block):
            masked = x == mask_id
            logits = plain_logits(cfg, sd, x)
            if cfg_scale > 0:
                un = plain_logits(cfg, sd, torch.where(torch.arange(len(x)) < p, mask_id, x))
                logits = un + (cfg_scale + 1) * (logits - un)
            x0 = logits.argmax(-1)
            conf = torch.softmax(logits, -1).gather(1, x0[:, None]).squeeze(1)
            conf[end:] = float("-inf")
            conf = torch.where(masked, conf, torch.tensor(float("-inf")))
            count = n // steps_per_block + (1 if i < n % steps_per_block else 0)
            chosen = torch.topk(conf, count).indices
            x[chosen] = x0[chosen]
    return x[p:].tolist()
