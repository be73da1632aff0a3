"""ModelRunner: turns a SchedulerOutput into one packed forward and the commits of every request.

Rows: one conditional row per forwarded request (its canvas), plus, with CFG, an unconditional row
(the same canvas with every prompt position replaced by the mask id). Only the masked positions of
each active block reach the LM head. Requests whose canvas did not change since their last forward
take no row and reuse that forward's logits (exact: the network has no time input).
"""

from __future__ import annotations

import os

import torch

from engine.outputs import Commit, SchedulerOutput, StepOutput
from engine.sampler import sample_candidates
from engine.unmasking import POLICIES, may_commit_nothing
from models.llada import PackedBatch
from models.registry import LoadedModel


class ModelRunner:
    def __init__(self, loaded: LoadedModel, ops):
        self.model = loaded.model
        self.config = loaded.config
        self.device = loaded.device
        self.ops = ops
        self.stop_ids = torch.tensor(loaded.stop_token_ids, dtype=torch.int64, device=self.device)

    def init_request(self, request) -> None:
        """Give a request its own random stream on this device (seeded when it asked for one)."""
        seed = request.params.seed
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        request.generator = torch.Generator(device=self.device).manual_seed(seed)

    def execute(self, sched: SchedulerOutput) -> StepOutput:
        positions = {r.request_id: r.masked_positions() for r in sched.forward + sched.reuse}
        logits, num_rows, num_tokens = self._forward(sched.forward, positions)
        commits = {}
        for req in sched.forward + sched.reuse:
            if req.request_id in logits:
                req_logits = logits[req.request_id]
                req.num_forward_passes += 1
                # A copy: a view would keep the whole batch's logits alive until the request moves on.
                req.cache = (req.canvas_version, req_logits.clone()) if may_commit_nothing(req) else None
            else:
                req_logits = req.cache[1]
            commits[req.request_id] = self._choose(req, req_logits, positions[req.request_id])
        return StepOutput(commits=commits, num_rows=num_rows, num_tokens=num_tokens)

    @torch.inference_mode()
    def _forward(self, requests, positions) -> tuple[dict[str, torch.Tensor], int, int]:
        """One packed forward; returns request_id -> guided logits [m, V] fp32 of its masked positions."""
        if not requests:
            return {}, 0, 0
        seqs, index, offset = [], [], 0
        for req in requests:
            rows = [req.canvas]
            if req.params.cfg_scale > 0:
                uncond = req.canvas.clone()
                uncond[: req.prompt_len] = self.config.mask_token_id
                rows.append(uncond)
            for row in rows:
                seqs.append(row)
                index.append(positions[req.request_id] + offset)
                offset += len(row)
        batch = PackedBatch.from_sequences(seqs, self.device)
        flat = self.model(batch, self.ops, torch.cat(index).to(self.device)).float()
        out, start = {}, 0
        for req in requests:
            m = len(positions[req.request_id])
            cond = flat[start : start + m]
            start += m
            if req.params.cfg_scale > 0:
                un = flat[start : start + m]
                start += m
                cond = un + (req.params.cfg_scale + 1.0) * (cond - un)
            out[req.request_id] = cond
        return out, len(seqs), offset

    def _choose(self, req, logits: torch.Tensor, positions: torch.Tensor) -> Commit:
        params = req.params
        if params.logits_eos_inf:
            logits = logits.clone()
            logits[:, self.config.eos_token_id] = float("-inf")
        tokens, confidence = sample_candidates(logits, req, self.ops)
        if params.confidence_eos_eot_inf:
            confidence = confidence.masked_fill(torch.isin(tokens, self.stop_ids), float("-inf"))
        chosen = POLICIES[params.mode].select(confidence, req).cpu()
        return Commit(positions=positions[chosen], tokens=tokens.cpu()[chosen])
