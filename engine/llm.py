"""LLM: the synchronous offline API.

    llm = LLM("path/to/checkpoint")            # or LLM() for the shipped demo model
    outs = llm.generate(["prompt a", "prompt b"], SamplingParams(max_tokens=64, block_length=32))
    outs = llm.generate(prompt_token_ids=[[...], [...]], sampling_params=...)
    outs = llm.chat([{"role": "user", "content": "hi"}], SamplingParams(temperature=0))

All requests of one call denoise together through the step-level scheduler.
"""

from __future__ import annotations

import itertools

from engine.engine import Engine, EngineConfig
from engine.outputs import RequestOutput
from engine.sampling_params import SamplingParams
from models.registry import LoadedModel
from models.tokenizer import render_chat


class LLM:
    """`model`: a checkpoint directory, None for the demo model, or an already built LoadedModel."""

    def __init__(
        self,
        model=None,
        *,
        tokenizer: str | None = None,
        smdm_size: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        kernels: str = "auto",
        cuda_graphs: str = "auto",
        max_num_seqs: int = 32,
        max_num_batched_tokens: int | None = None,  # None: max(65536, 2 x the model's context)
        cache: str | None = None,
        kv_cache_memory: float | None = None,
    ):
        loaded = model if isinstance(model, LoadedModel) else None
        self.engine = Engine(
            EngineConfig(
                model=None if loaded else model,
                tokenizer=tokenizer,
                smdm_size=smdm_size,
                dtype=dtype,
                device=device,
                kernels=kernels,
                cuda_graphs=cuda_graphs,
                max_num_seqs=max_num_seqs,
                max_num_batched_tokens=max_num_batched_tokens,
                cache=cache,
                kv_cache_memory=kv_cache_memory,
            ),
            loaded,
        )
        self.tokenizer = self.engine.tokenizer
        self._ids = itertools.count()

    def generate(
        self,
        prompts: str | list[str] | None = None,
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        *,
        prompt_token_ids: list[list[int]] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """Generate for text prompts or token-id prompts; outputs come back in input order."""
        if (prompts is None) == (prompt_token_ids is None):
            raise ValueError("pass exactly one of prompts or prompt_token_ids")
        if prompts is not None:
            prompts = [prompts] if isinstance(prompts, str) else list(prompts)
            if self.tokenizer is None:
                raise ValueError(
                    "this checkpoint has no tokenizer: pass prompt_token_ids, or a tokenizer directory "
                    "(LLM(tokenizer=DIR), --tokenizer DIR)"
                )
            encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
            return self._run(encoded, sampling_params, prompts, use_tqdm)
        return self._run([list(p) for p in prompt_token_ids], sampling_params, None, use_tqdm)

    def chat(
        self,
        messages: list[dict] | list[list[dict]],
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = False,
    ) -> list[RequestOutput]:
        """One conversation (a list of messages) or several; each gets the checkpoint's template."""
        if self.tokenizer is None:
            raise ValueError("this checkpoint has no tokenizer, so no chat template")
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        encoded = [render_chat(self.tokenizer, conv) for conv in conversations]
        return self._run(encoded, sampling_params, None, use_tqdm)

    def _run(self, encoded, sampling_params, prompts, use_tqdm) -> list[RequestOutput]:
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(encoded)
        if len(params) != len(encoded):
            raise ValueError("pass one SamplingParams, or one per prompt")
        # Validate everything first, so that a bad prompt fails the call before any work starts.
        for ids, p in zip(encoded, params, strict=True):
            self.engine.validate(ids, p)
        order = {}
        results: list[RequestOutput | None] = [None] * len(encoded)
        bar = None
        try:
            for i, (ids, p) in enumerate(zip(encoded, params, strict=True)):
                rid = str(next(self._ids))
                order[rid] = i
                self.engine.add_request(rid, ids, p, prompt=prompts[i] if prompts else None)
            bar = _progress(use_tqdm, self.engine)
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.finished:
                        results[order[out.request_id]] = out
                if bar is not None:
                    bar.update(1)
        except BaseException:  # an error or Ctrl-C: this call's requests leave, with their K/V pages
            for rid in order:
                self.engine.abort(rid)
            raise
        finally:
            if bar is not None:
                bar.close()
        return results


def _progress(enabled: bool, engine: Engine):
    """A progress bar over denoising steps (total known for the exact schedule)."""
    if not enabled:
        return None
    from tqdm import tqdm

    reqs = list(engine.scheduler.waiting) + engine.scheduler.running
    total = max((r.params.steps for r in reqs), default=None)
    if any(r.params.mode != "schedule" for r in reqs):
        total = None
    return tqdm(total=total, unit="step", desc="denoising")
