"""The OpenAPI document at /openapi.json: each route's request body from the protocol models, every
status it can answer, and the bearer key.

The handlers read their bodies themselves (strict parsing, OpenAI-shaped errors), so FastAPI cannot
see them: `json_body` declares a body on a route and `install` puts the models' schemas in the
document's components. FastAPI's 422 is dropped (this server never sends it). The interactive pages
(/docs, /redoc) are off: they load their scripts from a CDN.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from server import protocol as p

REF = "#/components/schemas/{model}"
STATUS = {
    400: "invalid request: bad JSON, a missing, unknown or mistyped field, a value out of range, an "
    "unsupported option, a context overflow, or (without an API key) a Host that is not allowed",
    401: "API key missing or wrong",
    404: "unknown model",
    413: "body larger than --max-request-bytes",
    415: "body not sent as application/json",
    429: "queue full (Retry-After: 1)",
    500: "a server bug; the request fails alone",
    503: "the server is shutting down, or its engine failed",
    504: "the request timed out (--request-timeout)",
}
GENERATION_STATUSES = (400, 401, 404, 413, 415, 429, 500, 503, 504)
TOKENIZER_STATUSES = (400, 401, 404, 413, 415, 500)
GUARDED_STATUSES = (400, 401)  # the API key or Host check
# One server-sent event (OpenAPI 3.1: a text/event-stream schema describes each event).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "data": {"type": "string", "description": "a JSON chunk, a JSON error object, or [DONE]"},
        "event": {"type": "string"},
    },
    "required": ["data"],
}


def errors(*statuses: int) -> dict:
    """`responses=` entries: an OpenAI error body for each status."""
    return {status: {"model": p.ErrorResponse, "description": STATUS[status]} for status in statuses}


def json_body(*models: type[BaseModel]) -> dict:
    """`openapi_extra=` of a route that reads one of `models` as its JSON body."""
    refs = [{"$ref": REF.format(model=m.__name__)} for m in models]
    schema = refs[0] if len(refs) == 1 else {"anyOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def generation_route(body: type[BaseModel], answer: type[BaseModel]) -> dict:
    """Route arguments of a generation endpoint: `answer` as JSON, or server-sent events."""
    events = {"text/event-stream": {"schema": SSE_EVENT}}
    ok = {"model": answer, "description": "JSON, or with `stream` server-sent events", "content": events}
    return {"responses": {200: ok, **errors(*GENERATION_STATUSES)}, "openapi_extra": json_body(body)}


def tokenizer_route(answer: type[BaseModel], *bodies: type[BaseModel]) -> dict:
    """Route arguments of /tokenize and /detokenize."""
    return {
        "response_model": answer,
        "responses": errors(*TOKENIZER_STATUSES),
        "openapi_extra": json_body(*bodies),
    }


def install(
    app: FastAPI,
    body_models: list[type[BaseModel]],
    served_model_name: str,
    guarded_prefixes: tuple[str, ...],
    keyed: bool,
):
    """Serve the document with the body models' schemas (whose `model` is the served name); with a
    key, the guarded paths need it."""

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        _, defs = models_json_schema([(m, "validation") for m in body_models], ref_template=REF)
        components = doc.setdefault("components", {})
        components.setdefault("schemas", {}).update(defs.get("$defs", {}))
        for model in body_models:
            _only_served_model(components["schemas"][model.__name__], served_model_name)
        for name in ("HTTPValidationError", "ValidationError"):
            components["schemas"].pop(name, None)
        if keyed:
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in doc["paths"].items():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
                if keyed and path.startswith(guarded_prefixes):
                    operation["security"] = [{"bearer": []}]
        app.openapi_schema = doc
        return doc

    app.openapi = openapi


def _only_served_model(schema: dict, name: str) -> None:
    """`model` may name only the served model (anything else is a 404)."""
    field = schema["properties"].get("model")
    if field is None:
        return
    for option in field.get("anyOf", [field]):
        if option.get("type") == "string":
            option["enum"] = [name]
