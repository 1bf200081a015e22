"""What Litestar's generated OpenAPI schema cannot know, added once the app is built.

Litestar documents a handler's own return type and a generic 400; the statuses that come from
the layers around a handler (the key check, the route's roles, rate limits, request validation, the
body size limit, an unavailable database) are added here, from the shape of each operation, as
problem details, so that ``/schema`` lists every status a client can get and the body it
carries. A handler declares the statuses of its own logic with ``responses=problems(...)``.
Also added: the server-sent events of ``stream: true``, the links between operations, and
example request bodies. ``tests/integration/test_fuzz_schema.py`` holds the server to all of it.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Example,
    Link,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    Reference,
    Schema,
)
from litestar.openapi.spec.request_body import RequestBody

from mvm_chat.api.errors import PROBLEM_JSON

PROBLEM_REF = Reference(ref="#/components/schemas/Problem")
PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    description="Problem details (RFC 9457), with an OpenAI-style error member",
    required=["type", "status", "title", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "title": Schema(type=OpenAPIType.STRING),
        "detail": Schema(type=OpenAPIType.STRING),
        "error": Schema(
            type=OpenAPIType.OBJECT,
            required=["message", "type", "code"],
            properties={
                "message": Schema(type=OpenAPIType.STRING),
                "type": Schema(type=OpenAPIType.STRING),
                "code": Schema(type=OpenAPIType.INTEGER),
            },
        ),
    },
)
SSE_EVENT = Schema(
    type=OpenAPIType.OBJECT,
    description="One server-sent event of a reply with stream: true; data is JSON or [DONE]",
    required=["data"],
    properties={
        "data": Schema(type=OpenAPIType.STRING),
        "event": Schema(type=OpenAPIType.STRING),
        "id": Schema(type=OpenAPIType.STRING),
        "retry": Schema(type=OpenAPIType.INTEGER),
    },
)
_WHY = {
    400: "The body or a parameter cannot be parsed",
    401: "No key, or an unknown or revoked key",
    403: "The key's role may not use this route",
    404: "No such object for this tenant",
    409: "The request conflicts with the state of its target",
    413: "The body is larger than the configured limit",
    422: "A parameter or field is invalid; the detail names it",
    429: "Rate limited; retry after Retry-After seconds",
    502: "Every model that could answer failed",
    503: "A dependency (database, engine) is unavailable; retry after Retry-After seconds",
}
_RETRY_AFTER = {
    "Retry-After": OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING), description="Seconds to wait before retrying"
    )
}
_METHODS = ("get", "put", "post", "delete", "patch")
_CONVERSATION = "/v1/conversations/{conversation_id}"
_BUDGET = "/admin/budgets/{tenant}"
_LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, dict[str, str]]]] = {
    # (method, path, status): {link name: (method, path, parameters)}
    ("post", "/v1/conversations", "201"): {
        "GetConversation": ("get", _CONVERSATION, {"conversation_id": "$response.body#/id"}),
        "SendMessage": (
            "post",
            _CONVERSATION + "/messages",
            {"conversation_id": "$response.body#/id"},
        ),
    },
    ("post", _CONVERSATION + "/messages", "200"): {
        "GetConversation": (
            "get",
            _CONVERSATION,
            {"conversation_id": "$request.path.conversation_id"},
        ),
    },
    ("post", "/v1/chat/completions", "200"): {
        "GetConversation": (
            "get",
            _CONVERSATION,
            {"conversation_id": "$response.header.X-Conversation-Id"},
        ),
    },
    ("put", _BUDGET, "200"): {
        "GetBudget": ("get", _BUDGET, {"tenant": "$request.path.tenant"}),
        "DeleteBudget": ("delete", _BUDGET, {"tenant": "$request.path.tenant"}),
    },
}
"""The links between operations (OpenAPI ``links``), which stateful clients and fuzzers follow."""
_ASK = [{"role": "user", "content": "Where is my new card?"}]
_BODY_EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/chat/completions"): {
        "answer": {"model": "auto", "messages": _ASK},
        "stream": {"model": "auto", "messages": _ASK, "stream": True},
    },
    ("post", "/v1/conversations"): {"new": {"title": "Card delivery"}},
    ("post", _CONVERSATION + "/messages"): {
        "answer": {"content": "Where is my new card?"},
        "stream": {"content": "Where is my new card?", "stream": True},
    },
    ("put", _BUDGET): {"budget": {"monthly_usd": "25.00", "include_self_hosted": False}},
}
"""Request bodies that the server accepts, shown in the schema (and tried by fuzzers)."""


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """``responses=`` for a route handler: the problem-details statuses its own logic raises."""
    return {
        status: ResponseSpec(
            data_container=dict[str, Any],
            description=_WHY.get(status, "Error"),
            media_type=PROBLEM_JSON,
            generate_examples=False,
        )
        for status in statuses
    }


def _problem_response(status: int) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=_WHY.get(status, "Error"),
        content={PROBLEM_JSON: OpenAPIMediaType(schema=PROBLEM_REF)},
        headers=dict(_RETRY_AFTER) if status in (429, 503) else None,
    )


def _layer_statuses(operation: Operation) -> set[int]:
    """The statuses the layers around the operation's handler can answer with."""
    statuses: set[int] = set()
    if operation.security:
        statuses |= {401, 403, 429, 503}
    params = [p for p in operation.parameters or [] if isinstance(p, Parameter)]
    if any(p.param_in == "path" for p in params):
        statuses.add(404)
    if params or operation.request_body is not None:
        statuses |= {400, 422}
    if operation.request_body is not None:
        statuses.add(413)
    return statuses


def _streams(body: RequestBody | Reference | None, schemas: dict[str, Any]) -> bool:
    """Whether the request body has a ``stream`` flag (answered with server-sent events)."""
    if not isinstance(body, RequestBody):
        return False
    for media in body.content.values():
        schema = media.schema
        if isinstance(schema, Reference):
            schema = schemas.get(schema.ref.rsplit("/", 1)[-1])
        if isinstance(schema, Schema) and "stream" in (schema.properties or {}):
            return True
    return False


def document_problems(app: Litestar) -> None:
    """Add the problem-details responses to every operation of ``app``'s schema."""
    openapi: OpenAPI = app.openapi_schema
    assert openapi.components is not None and not isinstance(openapi.components, list)
    schemas = openapi.components.schemas if openapi.components.schemas is not None else {}
    schemas["Problem"] = PROBLEM_SCHEMA
    openapi.components.schemas = schemas
    for path, item in (openapi.paths or {}).items():
        for method in _METHODS:
            operation: Operation | None = getattr(item, method)
            if operation is None:
                continue
            responses = operation.responses if operation.responses is not None else {}
            for status in _layer_statuses(operation):
                responses[str(status)] = _problem_response(status)
            for key, response in list(responses.items()):
                # the statuses a handler declared with problems(...): the one Problem schema
                if isinstance(response, OpenAPIResponse) and PROBLEM_JSON in (
                    response.content or {}
                ):
                    responses[key] = _problem_response(int(key))
            ok = responses.get("200")
            if _streams(operation.request_body, schemas) and isinstance(ok, OpenAPIResponse):
                ok.content = {
                    **(ok.content or {}),
                    "text/event-stream": OpenAPIMediaType(schema=SSE_EVENT),
                }
            operation.responses = responses
            _link(path, method, responses)
            _examples(path, method, operation.request_body)


def _examples(path: str, method: str, body: RequestBody | Reference | None) -> None:
    examples = _BODY_EXAMPLES.get((method, path))
    if examples and isinstance(body, RequestBody):
        for media in body.content.values():
            media.examples = {name: Example(value=value) for name, value in examples.items()}


def _pointer(method: str, path: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def _link(path: str, method: str, responses: dict[str, Any]) -> None:
    for status, response in responses.items():
        links = _LINKS.get((method, path, status))
        if links and isinstance(response, OpenAPIResponse):
            response.links = {
                name: Link(operation_ref=_pointer(*target[:2]), parameters=dict(target[2]))
                for name, target in links.items()
            }
