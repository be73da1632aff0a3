"""The OpenAI-compatible HTTP layer, and nothing else (the engine lives in engine/).

protocol.py    pydantic request/response models (strict: unknown or mistyped fields are 400s)
convert.py     protocol <-> engine: token ids, SamplingParams, responses and stream chunks
generation.py  running an HTTP request's engine requests: JSON body or server-sent events
errors.py      OpenAI error bodies and the status each failure gets
auth.py        who may call: bearer API key, Host check without a key, JSON-only bodies
metrics.py     Prometheus metrics and the request-counting middleware
request_log.py X-Request-Id and the access log
tokenization.py  /tokenize and /detokenize
openapi.py     the OpenAPI document: request bodies and error statuses
app.py         the app factory and the routes
connections.py a deadline for each request's headers (uvicorn's HTTP protocol, extended)
cli.py         `dllm serve`: flags, environment variables, uvicorn, graceful shutdown
"""
