"""/tokenize and /detokenize (vLLM's shapes): the token ids the generation endpoints would make of a
prompt or a conversation, and the text of token ids. No I/O here; app.py's routes call these."""

from __future__ import annotations

from server import protocol as p
from server.convert import chat_prompt_ids
from server.errors import invalid_request


def tokenize(engine, req: p.TokenizeCompletionRequest | p.TokenizeChatRequest) -> p.TokenizeResponse:
    tokenizer = _tokenizer(engine)
    if isinstance(req, p.TokenizeChatRequest):
        ids = chat_prompt_ids(tokenizer, req.messages, req.add_generation_prompt)
    else:
        ids = tokenizer(req.prompt, add_special_tokens=req.add_special_tokens)["input_ids"]
    return p.TokenizeResponse(tokens=ids, count=len(ids), max_model_len=engine.engine.max_model_len)


def detokenize(engine, req: p.DetokenizeRequest) -> p.DetokenizeResponse:
    tokenizer = _tokenizer(engine)
    vocab = len(tokenizer)
    bad = next((t for t in req.tokens if not 0 <= t < vocab), None)
    if bad is not None:
        raise invalid_request(f"token id {bad} is not in the vocabulary [0, {vocab})", "tokens")
    return p.DetokenizeResponse(prompt=tokenizer.decode(req.tokens))


def _tokenizer(engine):
    if engine.tokenizer is None:
        raise invalid_request("this model has no tokenizer", code="no_tokenizer")
    return engine.tokenizer
