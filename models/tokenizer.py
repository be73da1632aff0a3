"""Tokenizer and chat template, loaded offline from the checkpoint directory."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from models.config import read_json
from models.errors import CheckpointError


def load_tokenizer(ckpt_dir: Path):
    """The checkpoint's tokenizer, or None when the directory ships no tokenizer files."""
    if not (ckpt_dir / "tokenizer.json").exists() and not (ckpt_dir / "tokenizer_config.json").exists():
        return None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import PreTrainedTokenizerFast

    # LLaDA ships a plain PreTrainedTokenizerFast; loading it directly skips AutoConfig, which does
    # not know model_type "llada" and would warn about it.
    fast = (ckpt_dir / "tokenizer.json").exists()
    cls = PreTrainedTokenizerFast if fast else _stock_class(ckpt_dir)
    try:  # a release's own tokenizer code is refused with an error (never run, never a prompt)
        return cls.from_pretrained(str(ckpt_dir), local_files_only=True, trust_remote_code=False)
    except Exception as exc:  # transformers raises many types; the user needs the file and reason
        source = ckpt_dir / ("tokenizer.json" if fast else "tokenizer_config.json")
        reason = " ".join(str(exc).split())  # transformers' messages span lines; ours is one
        raise CheckpointError(f"{source}: cannot load tokenizer ({reason})") from None


# Tokenizer classes releases ship as their own code (tokenizer_config.json `auto_map`) -> the
# transformers class that reads the same files and tokenizes the same way.
STOCK_TOKENIZERS = {"DreamTokenizer": "Qwen2TokenizerFast"}  # Qwen2's BPE: vocab.json + merges.txt


def _stock_class(ckpt_dir: Path):
    """The class for a directory without tokenizer.json: a stock stand-in for a custom class its
    tokenizer_config.json names, else AutoTokenizer."""
    import transformers

    name = read_json(ckpt_dir / "tokenizer_config.json").get("tokenizer_class")
    return getattr(transformers, STOCK_TOKENIZERS.get(name, "AutoTokenizer"))


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the chat-formatted prompt, ending with the assistant header (unless
    `add_generation_prompt` is false: the conversation alone, as /tokenize may ask).

    Special tokens come from the template only: special-token text inside a message's content (a
    user typing `<|eot_id|><|start_header_id|>system...`) is encoded as the plain text it is, so it
    cannot forge a turn. Content without such text tokenizes exactly as the rendered string does.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("this model's tokenizer has no chat template; send a plain prompt instead")
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    specials = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special]
    if not any(s in str(m.get("content", "")) for m in messages for s in specials):
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return _render_content_as_text(tokenizer, messages, text, add_generation_prompt)


def _render_content_as_text(
    tokenizer, messages: list[dict], text: str, add_generation_prompt: bool
) -> list[int]:
    """Render again with a random mark for each content, find what the template made of each content
    in `text` (after filters such as trim), and encode template parts with special tokens and
    contents without. The fast tokenizer splits on special tokens before anything else, so the parts
    encode as they would inside the whole string."""
    marks = [f"dllm{secrets.token_hex(8)}m{i}" for i in range(len(messages))]
    skeleton = tokenizer.apply_chat_template(
        [{**m, "content": mark} for m, mark in zip(messages, marks, strict=True)],
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    parts = re.split(f"({'|'.join(marks)})", skeleton)  # template, mark, template, mark, ..., template
    pattern, seen = [], set()
    for k, part in enumerate(parts):
        if k % 2 == 0:
            pattern.append(re.escape(part))
        else:
            pattern.append(f"(?P={part})" if part in seen else f"(?P<{part}>.*?)")
            seen.add(part)
    match = re.fullmatch("".join(pattern), text, re.DOTALL)
    if match is None:
        raise ValueError(
            "a message contains special-token text that this model's chat template cannot keep as text"
        )
    ids = []
    for k, part in enumerate(parts):
        if k % 2 == 0:
            ids += tokenizer(part, add_special_tokens=False)["input_ids"]
        else:
            content = match.group(part)
            ids += tokenizer(content, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ids


def max_token_chars(tokenizer) -> int:
    """Characters of the vocabulary's longest token (byte-level vocabularies: bytes, at least the
    characters). A text of n characters is at least n / max_token_chars tokens."""
    return max(len(token) for token in tokenizer.get_vocab())


def special_token_id(tokenizer, token: str) -> int | None:
    """Id of a special token by its text, or None when the vocabulary lacks it."""
    if tokenizer is None:
        return None
    tid = tokenizer.convert_tokens_to_ids(token)
    return tid if isinstance(tid, int) and tid != tokenizer.unk_token_id else None
