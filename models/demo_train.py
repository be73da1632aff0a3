"""Train the demo checkpoint: a small LLaDA-layout masked-diffusion chat model on the task suite.

    python -m models.demo_train --out models/demo            (or: dllm train-demo --out models/demo)

Objective (LLaDA SFT): each example is prompt + response, the response being the answer, <|eot_id|>
and <|endoftext|> padding to a fixed length. Per example draw t ~ U(0, 1), p = (1 - eps) t + eps, and
replace each response token by <|mdm_mask|> independently with probability p (the prompt is never
masked). The loss is the cross-entropy on the masked positions weighted by 1/p, summed per example,
divided by that example's response length, averaged over the batch.

Everything is seeded (task stream, masks, initialisation), runs on CPU, shows a tqdm progress bar and
logs the loss. `--max-minutes` stops early at a time budget and still saves; the learning-rate schedule
is defined over `--steps`, so a run that is not cut short is reproducible.

At the end the held-out exact match is measured with `greedy_generate`, a minimal LLaDA decoder (one
token per step, low-confidence remasking, temperature 0), and the checkpoint is written in the LLaDA
layout with the tokenizer and a generation_config.json whose defaults suit the tasks.

CPU speed: the attention is two batched matmuls around an fp32 softmax (VarlenTrainOps), bf16
autocast is on by default where the CPU has AMX bf16 tiles (`use_bf16`), and `--compile` (on by
default; eager with a message if compiling fails) fuses the elementwise work with torch.compile. On
the 2-core development CPU a d256x6 model at batch 128 went from 4.7k tokens/s (fp32, SDPA) to ~10k.

The defaults are the CPU recipe that made the shipped models/demo: d_model 128, 6 layers, 4 heads,
MLP 512 (1.64M parameters), batch 128, lr 1e-3 (300 warmup steps, cosine over 9500 steps), rope theta
1e4, stratified mask ratios, 60% of the responses padded only to a random length between the answer's
end and 24 tokens and 5% to 48, and a time budget of 84 minutes that stops the run and saves.
The shipped run used `--threads 1` on one core of the 2-core development CPU (Intel Xeon with AMX, torch
2.13) while another run used the other core: 11.0k tokens/s, stopped by the budget at step 7926
(1.01M examples, 55M tokens); held-out exact match over 200 prompts per task: reverse 100%, sort
99.5%, add 100%, copy 100%. Its learning curve (32 held-out prompts per task): a plateau with the
answer lengths right and the content wrong (loss ~0.7) until step ~2300, then step 3000 reverse 84%,
sort 62%, add 72%; step 4000 100/84/91%; step 5000 97/97/94%; step 7000 100/94/100%.
A second seed (`--seed 1 --steps 7700 --threads 1`, the same conditions, the schedule completed in
85.3 minutes at 10.5k tokens/s) ended at reverse 100%, sort 96.5%, add 99.5%, copy 100% (200 per task).
With `--threads 2` on the idle machine the model trains at ~18.9k tokens/s once compiled (steps
100-400 of a 400-step run; compiling took ~80 s), so the whole 9500-step schedule should take about an
hour (estimated from that rate, not run).
What changed from the runs that failed: 6 layers instead of 4 and lr 1e-3 instead of 2e-3 (not
separated). Four d128x4 runs at batch 128 and lr 2e-3 (4000-6600 steps, same width and data) never
got reverse above 13%; the 6-layer model left the plateau at ~2300 steps, as the d256x6 GPU recipe
below did at ~1100 steps of 512. The short padding cuts a training example from ~60 to ~55 tokens.

The shipped model then had a second, fine-tuning run so that it answers at max_tokens up to 256 (the
first run's model filled canvases of 128 and more with EOS): `--init-from models/demo --steps 1400
--batch-size 64 --warmup 50 --lr 3e-4 --long-response-prob 0.4 --short-response-prob 0.4
--long-lengths 64,128,256 --max-minutes 45 --threads 1`, stopped by the budget at step 975 (2.4k
tokens/s on a loaded machine); held-out 100/99/100/100% at 24 tokens and 97-99% on every task at 256
(`dllm eval --max-tokens`).

GPU recipe (the previous shipped model, d256x6, 5.25M parameters, 6 minutes on one H200, held-out
100/99.6/99.6%): `python -m models.demo_train --device cuda --bf16 --threads 8 --d-model 256
--n-heads 8 --mlp-hidden 768 --batch-size 512 --steps 4500 --rope-theta 500000 --long-response-prob
0.15 --short-response-prob 0 --no-stratified-t --no-compile --eval-every 1500 --max-minutes 0`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from kernels.ops import TorchOps
from models.demo_tasks import (
    CORE_TASKS,
    TASKS,
    TaskEncoder,
    TrainStream,
    build_demo_tokenizer,
    heldout_examples,
    is_correct,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "demo"


class VarlenTrainOps(TorchOps):
    """TorchOps whose attention pads a packed batch into one masked attention written as matmuls.

    Training sequences are short (under 100 tokens) and of unequal length. The reference attention
    loops over sequences when their lengths differ, and SDPA's CPU flash kernel spends most of a
    training step in its backward at these sizes; two batched matmuls around a float32 softmax are
    several times faster here, and run on bf16 matrix units under autocast.
    """

    _layout: tuple | None = None

    def prepare(self, cu_seqlens: torch.Tensor) -> tuple:
        """Padding layout of a packed batch (row -> sequence, position; -inf bias on padded keys),
        shared by all layers. Called outside torch.compile, so the compiled graph sees no data-
        dependent shapes."""
        lengths = cu_seqlens.diff()
        b, t = lengths.numel(), int(lengths.max())
        seq = torch.repeat_interleave(torch.arange(b, device=cu_seqlens.device), lengths.long())
        pos = torch.arange(seq.numel(), device=cu_seqlens.device) - cu_seqlens.long()[seq]
        padded = torch.arange(t, device=cu_seqlens.device)[None, :] >= lengths[:, None]
        key_bias = torch.zeros(b, 1, 1, t, device=cu_seqlens.device)
        key_bias = key_bias.masked_fill(padded.view(b, 1, 1, t), -math.inf)
        self._layout = (cu_seqlens, seq, pos, key_bias)
        return self._layout

    def attention(self, q, k, v, cu_seqlens_q, cu_seqlens_k, scale=None):
        if cu_seqlens_q is not cu_seqlens_k and not torch.equal(cu_seqlens_q, cu_seqlens_k):
            return super().attention(q, k, v, cu_seqlens_q, cu_seqlens_k, scale)
        layout = self._layout
        if layout is None or layout[0] is not cu_seqlens_q:
            layout = self.prepare(cu_seqlens_q)
        _, seq, pos, key_bias = layout
        b, t = key_bias.shape[0], key_bias.shape[-1]
        group = q.shape[1] // k.shape[1]

        def pad(x):
            out = x.new_zeros(b, t, *x.shape[1:])
            out[seq, pos] = x
            return out.transpose(1, 2)  # [B, H, T, D]

        qb = pad(q)
        kb = pad(k).repeat_interleave(group, dim=1)
        vb = pad(v).repeat_interleave(group, dim=1)
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        scores = torch.matmul(qb, kb.transpose(-1, -2)).float() * scale + key_bias
        probs = scores.softmax(dim=-1).to(vb.dtype)
        ob = torch.matmul(probs, vb)
        return ob.transpose(1, 2)[seq, pos].to(q.dtype)


# ----------------------------------------------------------------------------------------------
# Model construction


def make_config(args, tok) -> dict:
    from models.checkpoint_writer import llada_config_dict

    return llada_config_dict(
        d_model=args.d_model, n_heads=args.n_heads, n_kv_heads=args.n_heads, n_layers=args.n_layers,
        mlp_hidden_size=args.mlp_hidden, vocab_size=len(tok),
        mask_token_id=tok.convert_tokens_to_ids("<|mdm_mask|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), max_sequence_length=512,
        rope_theta=args.rope_theta,
    )


def init_weights(model, n_layers: int, gen: torch.Generator, std: float = 0.02) -> None:
    """Normal(0, std) everywhere; residual output projections scaled by 1/sqrt(2 n_layers)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
                continue
            residual_out = ".blocks." in name and name.endswith(("attn_out.weight", "ff_out.weight"))
            s = std / math.sqrt(2 * n_layers) if residual_out else std
            p.copy_(torch.randn(p.shape, generator=gen) * s)


def generation_config(tok, gen_length: int) -> dict:
    """Sampling defaults shipped with the checkpoint: exact one-token-per-step greedy decoding."""
    return {
        "max_tokens": gen_length,
        "steps": gen_length,
        "block_length": gen_length,
        "temperature": 0.0,
        "remasking": "low_confidence",
        "cfg_scale": 0.0,
        "bos_token_id": tok.convert_tokens_to_ids("<|startoftext|>"),
        "eos_token_id": [tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|eot_id|>")],
        "pad_token_id": tok.convert_tokens_to_ids("<|endoftext|>"),
        "mask_token_id": tok.convert_tokens_to_ids("<|mdm_mask|>"),
    }


# ----------------------------------------------------------------------------------------------
# Minimal LLaDA decoder (for accuracy checks during and after training)


@torch.no_grad()
def greedy_generate(
    model, ops, prompts: list[list[int]], *, gen_length: int, steps: int, block_length: int,
    mask_id: int, stop_ids: tuple[int, ...], device="cpu",
) -> list[list[int]]:
    """LLaDA's sampler at temperature 0 with low-confidence remasking, batched over prompts.

    Canvas = prompt + gen_length masks; per block, the per-step commit counts follow LLaDA's
    schedule (floor(n/S), the first n mod S steps one more); each step commits the most confident
    masked positions of the active block. Returns the generated ids cut at the first stop id.
    """
    assert gen_length % block_length == 0 and steps % (gen_length // block_length) == 0
    n_blocks = gen_length // block_length
    steps_per_block = steps // n_blocks
    seqs = [torch.tensor(p + [mask_id] * gen_length, dtype=torch.long) for p in prompts]
    from models.llada import PackedBatch

    batch = PackedBatch.from_sequences(seqs, device)
    ids = batch.input_ids  # [N], written in place
    lengths = [len(p) for p in prompts]
    starts = batch.cu_seqlens[:-1].long() + torch.tensor(lengths, device=device)  # first gen row
    b = len(prompts)
    offs = torch.arange(gen_length, device=device)
    gen_rows = starts[:, None] + offs[None, :]  # [B, G]
    for blk in range(n_blocks):
        base, counts = divmod(block_length, steps_per_block)
        schedule = [base + (1 if i < counts else 0) for i in range(steps_per_block)]
        in_block = (offs >= blk * block_length) & (offs < (blk + 1) * block_length)
        for k in schedule:
            if k == 0:
                continue
            masked = ids[gen_rows] == mask_id  # [B, G]
            rows = gen_rows[masked]
            logits = model(batch, ops, logits_index=rows).float()
            probs = logits.softmax(-1)
            conf, x0 = probs.max(-1)
            conf_full = torch.full((b, gen_length), -math.inf, device=device)
            x0_full = torch.full((b, gen_length), mask_id, dtype=torch.long, device=device)
            conf_full[masked] = conf
            x0_full[masked] = x0
            conf_full[:, ~in_block] = -math.inf
            top = conf_full.topk(k, dim=-1).indices  # [B, k]
            valid = torch.gather(conf_full, 1, top) > -math.inf
            sel_rows = torch.gather(gen_rows, 1, top)[valid]
            ids[sel_rows] = torch.gather(x0_full, 1, top)[valid]
    out = ids[gen_rows].tolist()
    result = []
    for row in out:
        cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
        result.append(row[:cut])
    return result


def evaluate(model, ops, tok, enc: TaskEncoder, *, n_per_task: int, gen_length: int, steps: int,
             block_length: int, tasks=TASKS, seed: int = 1234, batch_size: int = 128) -> dict:
    """Held-out exact match per task with greedy_generate."""
    was_training = model.training
    model.eval()
    exs = [e for task in tasks for e in heldout_examples(task, n_per_task, seed=seed)]
    correct = dict.fromkeys(tasks, 0)
    for i in range(0, len(exs), batch_size):  # one batch mixes tasks: fewer, fuller forwards
        chunk = exs[i:i + batch_size]
        outs = greedy_generate(
            model, ops, enc.prompt_ids([e.prompt for e in chunk]), gen_length=gen_length,
            steps=steps, block_length=block_length, mask_id=enc.mask, stop_ids=(enc.eos, enc.eot),
            device=next(model.parameters()).device,
        )
        texts = tok.batch_decode(outs, skip_special_tokens=True)
        for e, t in zip(chunk, texts, strict=True):
            correct[e.task] += is_correct(e, t)
    acc = {task: correct[task] / n_per_task for task in tasks}
    model.train(was_training)
    return acc


# ----------------------------------------------------------------------------------------------
# Training


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--out", default=str(DEFAULT_OUT), help="checkpoint directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=9500, help="optimizer steps (the LR schedule spans these)")
    p.add_argument("--batch-size", type=int, default=128, help="examples per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--n-layers", type=int, default=6)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--mlp-hidden", type=int, default=512)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--response-length", type=int, default=24,
                   help="answer + <|eot_id|> + EOS padding; also the shipped max_tokens/steps/block_length")
    p.add_argument("--long-response-prob", type=float, default=0.05,
                   help="share of examples padded to a longer response (robustness to longer max_tokens)")
    p.add_argument("--long-lengths", default=None,
                   help="comma-separated lengths the long examples are padded to, drawn uniformly "
                        "(default: twice --response-length)")
    p.add_argument("--init-from", default=None,
                   help="start from this checkpoint's weights and config (fine-tuning) instead of a "
                        "random initialisation; the model-size flags are then ignored")
    p.add_argument("--short-response-prob", type=float, default=0.6,
                   help="share of examples whose EOS padding stops at a random length between the answer's "
                        "end and the response length (fewer tokens per example; LLaDA's SFT pads each "
                        "batch only to its longest member)")
    p.add_argument("--mask-eps", type=float, default=1e-3)
    p.add_argument("--stratified-t", action=argparse.BooleanOptionalAction, default=True,
                   help="draw the batch's mask ratios stratified over (0, 1) (lower-variance loss)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu (the reference recipe) or cuda")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on for CUDA and for CPUs with AMX bf16 matrix units)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="torch.compile the forward: fuses the elementwise work (needs a C++ compiler on "
                        "CPU; falls back to eager with a message if compiling fails)")
    p.add_argument("--max-minutes", type=float, default=84.0,
                   help="stop at this time budget and save (keeps a run within 90 minutes with its final "
                        "evaluation; 0: no budget)")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--log-file", default=None, help="also append loss lines here")
    p.add_argument("--eval-every", type=int, default=1000, help="held-out check on a few prompts (0: off)")
    p.add_argument("--eval-prompts", type=int, default=500, help="held-out prompts per task at the end")
    p.add_argument("--num-shards", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")
    return p


def _cpuinfo() -> str:
    """/proc/cpuinfo, or "" where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def use_bf16(device: torch.device) -> bool:
    """bf16 autocast pays on CUDA and on CPUs with AMX bf16 tiles (on the 2-core development CPU a bf16
    matmul runs ~10x the fp32 rate); elsewhere fp32 stays the default."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and "amx_bf16" in _cpuinfo()


def cpu_name() -> str:
    """"cpu: <model name> (<n> cores)" from /proc/cpuinfo where it exists."""
    info = _cpuinfo()
    names = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")]
    amx = " with AMX" if "amx_bf16" in info else ""
    return f"cpu: {names[0]}{amx} ({len(names)} cores)" if names else "cpu"


def lr_at(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * cos)


def mask_ratios(b: int, gen: torch.Generator, *, eps: float, stratified: bool) -> torch.Tensor:
    """Per-example masking probabilities p = (1 - eps) t + eps with t ~ U(0, 1). Stratified: example
    i draws t from [i / b, (i + 1) / b); the examples are i.i.d., so an example's t is still U(0, 1),
    but the batch covers (0, 1) evenly, which lowers the variance of the 1/p-weighted loss."""
    t = torch.rand(b, generator=gen)
    if stratified:
        t = (torch.arange(b) + t) / b
    return (1 - eps) * t + eps


def make_batch(stream: TrainStream, enc: TaskEncoder, args, gen: torch.Generator, device):
    """Packed noisy batch: (PackedBatch, masked row indices, targets, per-row loss weights, tokens)."""
    from models.llada import PackedBatch

    exs = stream.batch(args.batch_size)
    b, r_len = len(exs), args.response_length
    longs = long_lengths(args)
    kind = torch.rand(b, generator=gen).tolist()
    # drawn only when used, so runs without short responses keep their random stream
    short_u = torch.rand(b, generator=gen).tolist() if args.short_response_prob > 0 else None
    answers = enc.answer_ids([e.answer for e in exs])
    rlens = []
    for i, need in enumerate(len(a) + 1 for a in answers):  # + <|eot_id|>
        if kind[i] < args.long_response_prob:
            rlens.append(longs[min(int(kind[i] / args.long_response_prob * len(longs)), len(longs) - 1)])
        elif kind[i] < args.long_response_prob + args.short_response_prob:
            rlens.append(min(r_len, need + int(short_u[i] * (r_len - need + 1))))
        else:
            rlens.append(r_len)
    prompts = enc.prompt_ids([e.prompt for e in exs])
    responses = enc.response_ids(answers, rlens)
    p_mask = mask_ratios(b, gen, eps=args.mask_eps, stratified=args.stratified_t)
    u = torch.rand(b, max(rlens + [2 * r_len]), generator=gen)
    ids, rows, targets, weights = [], [], [], []
    offset = 0
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        masked = (u[i, : len(r)] < p_mask[i]).tolist()
        noisy = [enc.mask if m else tok for m, tok in zip(masked, r, strict=True)]
        ids += p + noisy
        start = offset + len(p)
        sel = [j for j, m in enumerate(masked) if m]
        rows += [start + j for j in sel]
        targets += [r[j] for j in sel]
        weights += [1.0 / (float(p_mask[i]) * len(r))] * len(sel)
        offset = start + len(r)
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses, strict=True)]
    positions = [j for n in lengths for j in range(n)]
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    batch = PackedBatch(
        torch.tensor(ids, dtype=torch.long).to(device, non_blocking=True),
        torch.tensor(positions, dtype=torch.long).to(device, non_blocking=True),
        torch.tensor(cu, dtype=torch.int32).to(device, non_blocking=True),
    )
    rows_t = torch.tensor(rows, dtype=torch.long).to(device)
    targets_t = torch.tensor(targets, dtype=torch.long).to(device)
    return batch, rows_t, targets_t, torch.tensor(weights).to(device), offset


def long_lengths(args) -> list[int]:
    if not args.long_lengths:
        return [2 * args.response_length]
    return [int(x) for x in str(args.long_lengths).split(",") if x]


def run(args) -> dict:
    from tqdm import tqdm

    from models.config import LLaDAConfig
    from models.llada import LLaDAModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    log_file = open(args.log_file, "a") if args.log_file else None

    def log(msg: str) -> None:
        tqdm.write(msg, file=sys.stdout)
        if log_file:
            log_file.write(msg + "\n")
            log_file.flush()

    tok = build_demo_tokenizer()
    enc = TaskEncoder(tok)
    gen = torch.Generator().manual_seed(args.seed)
    if args.init_from:
        cfg_dict, model, base_summary = load_for_finetuning(Path(args.init_from), tok)
    else:
        cfg_dict, base_summary = make_config(args, tok), None
        model = LLaDAModel(LLaDAConfig.from_dict(cfg_dict))
        init_weights(model, args.n_layers, gen)
    device = torch.device(args.device)
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    ops = VarlenTrainOps()
    forward = torch.compile(model, dynamic=True) if args.compile else model
    bf16 = use_bf16(device) if args.bf16 is None else args.bf16
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.98), eps=1e-8,
    )
    stream = TrainStream(args.seed)
    eval_kw = dict(gen_length=args.response_length, steps=args.response_length,
                   block_length=args.response_length)
    log(f"demo model: {n_params / 1e6:.2f}M params, vocab {len(tok)}, d_model {cfg_dict['d_model']}, "
        f"{cfg_dict['n_layers']} layers, {cfg_dict['n_heads']} heads, mlp {cfg_dict['mlp_hidden_size']}; "
        f"{args.steps} steps of {args.batch_size} examples, lr {args.lr}, seed {args.seed}"
        + (f", from {args.init_from}" if args.init_from else ""))

    model.train()
    t0 = time.time()
    tokens = 0
    loss_acc, norm_acc, n_acc = 0.0, 0.0, 0
    stopped_early = False
    bar = tqdm(total=args.steps, disable=args.no_progress, dynamic_ncols=True, file=sys.stderr)
    step = 0
    for step in range(args.steps):
        if args.max_minutes and time.time() - t0 > args.max_minutes * 60:
            stopped_early = True
            log(f"time budget of {args.max_minutes} min reached at step {step}; saving")
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        batch, rows, targets, weights, ntok = make_batch(stream, enc, args, gen, device)
        ops.prepare(batch.cu_seqlens)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            try:
                logits = forward(batch, ops, logits_index=rows)
            except Exception as exc:  # inductor needs a working C++ toolchain on CPU
                if forward is model:
                    raise
                log(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); training eagerly")
                forward = model
                logits = forward(batch, ops, logits_index=rows)
        ce = F.cross_entropy(logits.float(), targets, reduction="none")
        loss = (ce * weights).sum() / args.batch_size
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip or math.inf)
        norm_acc += grad_norm.detach()
        opt.step()
        tokens += ntok
        loss_acc += loss.detach()
        n_acc += 1
        bar.update(1)
        elapsed = time.time() - t0
        if (step + 1) % args.log_every == 0:
            loss_acc, norm_acc = float(loss_acc), float(norm_acc)
            log(f"step {step + 1:6d}  loss {loss_acc / n_acc:.4f}  grad norm {norm_acc / n_acc:.3f}  "
                f"lr {lr_at(step, args):.2e}  tok/s {tokens / elapsed:,.0f}  elapsed {elapsed:.1f} s")
            bar.set_postfix(loss=f"{loss_acc / n_acc:.3f}", tok_s=f"{tokens / elapsed:,.0f}")
            loss_acc, norm_acc, n_acc = 0.0, 0.0, 0
        if args.eval_every and (step + 1) % args.eval_every == 0:
            acc = evaluate(model, ops, tok, enc, n_per_task=32, seed=99, **eval_kw)
            log(f"step {step + 1:6d}  held-out (32/task) "
                + "  ".join(f"{k} {v:.0%}" for k, v in acc.items()))
    else:
        step = args.steps
    bar.close()
    train_s = time.time() - t0
    tok_s = tokens / max(train_s, 1e-9)
    log(f"trained {step} steps, {tokens:,} tokens in {train_s / 60:.1f} min ({tok_s:,.0f} tok/s)")

    acc = evaluate(model, ops, tok, enc, n_per_task=args.eval_prompts, **eval_kw) if args.eval_prompts else {}
    if acc:
        log("held-out exact match (" + f"{args.eval_prompts}/task, greedy, 1 token/step): "
            + "  ".join(f"{k} {v:.1%}" for k, v in acc.items()))

    model.eval()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    summary = {
        "command": "python -m models.demo_train " + " ".join(_argv_of(args)),
        "params": n_params, "steps_done": step, "stopped_early": stopped_early,
        "train_minutes": round(train_s / 60, 2), "tokens": tokens, "tokens_per_s": round(tok_s),
        "heldout_exact_match": {k: round(v, 4) for k, v in acc.items()},
        "heldout_prompts_per_task": args.eval_prompts, "core_tasks": list(CORE_TASKS),
        "torch": torch.__version__, "threads": args.threads, "bf16": bf16,
        "compiled": forward is not model,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
    }
    if base_summary is not None:
        summary["init_from"] = base_summary
    write_checkpoint(state, cfg_dict, tok, out, response_length=args.response_length,
                     num_shards=args.num_shards, summary=summary)
    log(f"checkpoint written to {out}")
    if log_file:
        log_file.close()
    return summary


def load_for_finetuning(ckpt: Path, tok) -> tuple[dict, torch.nn.Module, dict]:
    """(config dict, trainable model holding the checkpoint's weights, its training summary)."""
    from models.config import LLaDAConfig, read_json
    from models.llada import LLaDAModel
    from models.loader import load_weights

    cfg_dict = read_json(ckpt / "config.json")
    if cfg_dict.get("vocab_size") != len(tok):
        raise ValueError(f"{ckpt / 'config.json'}: vocab_size {cfg_dict.get('vocab_size')} is not the demo "
                         f"tokenizer's {len(tok)}")
    with torch.device("meta"):
        model = LLaDAModel(LLaDAConfig.from_dict(cfg_dict, source=str(ckpt / "config.json")))
    load_weights(model, ckpt, torch.float32, torch.device("cpu"))
    for p in model.parameters():
        p.requires_grad_(True)
    summary_path = ckpt / "training_summary.json"
    base = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return cfg_dict, model, base


def write_checkpoint(state: dict, cfg_dict: dict, tok, out: str | Path, *, response_length: int,
                     num_shards: int = 2, summary: dict | None = None) -> None:
    """The LLaDA layout: config.json, sharded fp32 safetensors + index, generation_config.json, the
    tokenizer (tokenizer.json, tokenizer_config.json carrying the chat template, as LLaDA's does),
    and a small training_summary.json."""
    from models.checkpoint_writer import save_llada_checkpoint

    out = Path(out)
    save_llada_checkpoint(state, cfg_dict, out, num_shards=num_shards, dtype=torch.float32,
                          generation_config=generation_config(tok, response_length))
    tok.save_pretrained(str(out))
    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text())
    tc["chat_template"] = tok.chat_template
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    for f in out.iterdir():
        f.chmod(0o644)
    if summary is not None:
        (out / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _argv_of(args) -> list[str]:
    parts = []
    for k, v in sorted(vars(args).items()):
        if k in ("out", "log_file", "no_progress") or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        parts += [flag] if v is True else [flag, str(v)]
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(
        prog="python -m models.demo_train", description="Train the demo masked-diffusion chat model."))
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
