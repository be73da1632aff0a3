"""The OpenAI-compatible HTTP layer, and nothing else (the engine lives in engine/).

protocol.py    pydantic request/response models (strict: unknown or mistyped fields are 400s)
convert.py     protocol <-> engine: token ids, SamplingParams, responses and stream chunks
generation.py  running an HTTP request's engine requests: JSON body or server-sent events
errors.py      OpenAI error bodies and the status each failure gets
auth.py        bearer API key
metrics.py     Prometheus metrics and the request-counting middleware
app.py         the app factory and the routes
cli.py         `dllm serve`: flags, environment variables, uvicorn, graceful shutdown
"""
