"""Tokenizer and chat template, loaded offline from the checkpoint directory."""

from __future__ import annotations

import os
from pathlib import Path

from models.errors import CheckpointError


def load_tokenizer(ckpt_dir: Path):
    """The checkpoint's tokenizer, or None when the directory ships no tokenizer files."""
    if not (ckpt_dir / "tokenizer.json").exists() and not (ckpt_dir / "tokenizer_config.json").exists():
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    # LLaDA ships a plain PreTrainedTokenizerFast; loading it directly skips AutoConfig, which does
    # not know model_type "llada" and would warn about it.
    cls = PreTrainedTokenizerFast if (ckpt_dir / "tokenizer.json").exists() else AutoTokenizer
    try:
        return cls.from_pretrained(str(ckpt_dir), local_files_only=True)
    except Exception as exc:  # transformers raises many types; the user needs the file and reason
        raise CheckpointError(f"{ckpt_dir}/tokenizer.json: cannot load tokenizer ({exc})") from None


def render_chat(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the chat-formatted prompt, ending with the assistant header."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("this model's tokenizer has no chat template; send a plain prompt instead")
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def special_token_id(tokenizer, token: str) -> int | None:
    """Id of a special token by its text, or None when the vocabulary lacks it."""
    if tokenizer is None:
        return None
    tid = tokenizer.convert_tokens_to_ids(token)
    return tid if isinstance(tid, int) and tid != tokenizer.unk_token_id else None
