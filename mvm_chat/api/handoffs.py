"""The agents' handoff queue (agent and admin keys of the handoff's tenant).

``GET /admin/handoffs[?status=open]``, ``GET /admin/handoffs/{id}``, and ``POST`` ``claim``,
``reply`` (``{"content": ...}``) and ``resolve`` on ``/admin/handoffs/{id}``. The rules live in
:mod:`mvm_chat.chat.handoff`; an invalid transition is a 409 problem.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import Parameter
from msgspec import Meta

from mvm_chat.api.auth import principal_of
from mvm_chat.chat import handoff as handoffs
from mvm_chat.chat.services import Services
from mvm_chat.store.models import Handoff, Message

HandoffId = Annotated[str, Parameter(max_length=64, description="Handoff id")]
LAST_MESSAGES = 5


class HandoffMessage(msgspec.Struct, kw_only=True):
    id: str
    role: str
    content: str
    created_at: str
    model: str | None


class HandoffView(msgspec.Struct, kw_only=True):
    """A handoff with the last few messages of its conversation, oldest first."""

    id: str
    conversation_id: str
    status: str
    reason: str
    claimed_by: str | None
    created_at: str
    claimed_at: str | None
    resolved_at: str | None
    messages: list[HandoffMessage]


class HandoffList(msgspec.Struct, kw_only=True):
    data: list[HandoffView]
    limit: int
    offset: int


class AgentReply(msgspec.Struct, kw_only=True):
    """An agent's message to the user."""

    content: Annotated[str, Meta(min_length=1, max_length=handoffs.MAX_CONTENT_CHARS)]


class AgentReplyResult(msgspec.Struct, kw_only=True):
    message_id: str
    handoff_id: str
    conversation_id: str
    status: str


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _view(handoff: Handoff, messages: list[Message]) -> HandoffView:
    return HandoffView(
        id=handoff.id,
        conversation_id=handoff.conversation_id,
        status=handoff.status,
        reason=handoff.reason,
        claimed_by=handoff.claimed_by,
        created_at=handoff.created_at.isoformat(),
        claimed_at=_iso(handoff.claimed_at),
        resolved_at=_iso(handoff.resolved_at),
        messages=[
            HandoffMessage(
                id=m.id,
                role=m.role,
                content=m.content,
                created_at=m.created_at.isoformat(),
                model=m.model,
            )
            for m in messages
        ],
    )


async def _detail(services: Services, handoff: Handoff) -> HandoffView:
    return _view(handoff, await handoffs.recent_messages(services, handoff, LAST_MESSAGES))


class HandoffController(Controller):
    path = "/admin/handoffs"
    tags = ["handoffs"]

    @get("/", summary="The tenant's handoffs, newest first, with their last messages")
    async def index(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        status: Literal["open", "claimed", "resolved"] | None = None,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        offset: Annotated[int, Parameter(ge=0, le=1_000_000)] = 0,
    ) -> HandoffList:
        rows = await handoffs.list_handoffs(
            services, principal_of(request), status, limit, offset, LAST_MESSAGES
        )
        return HandoffList(data=[_view(h, m) for h, m in rows], limit=limit, offset=offset)

    @get("/{handoff_id:str}", summary="One handoff")
    async def detail(
        self, request: Request[Any, Any, Any], services: Services, handoff_id: HandoffId
    ) -> HandoffView:
        handoff = await handoffs.get_handoff(services, principal_of(request), handoff_id)
        return await _detail(services, handoff)

    @post("/{handoff_id:str}/claim", status_code=200, summary="Claim an open handoff")
    async def claim(
        self, request: Request[Any, Any, Any], services: Services, handoff_id: HandoffId
    ) -> HandoffView:
        handoff = await handoffs.claim(services, principal_of(request), handoff_id)
        return await _detail(services, handoff)

    @post(
        "/{handoff_id:str}/reply",
        status_code=201,
        summary="Reply to the user: stored in the conversation and pushed to its WebSocket",
    )
    async def reply(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        handoff_id: HandoffId,
        data: AgentReply,
    ) -> AgentReplyResult:
        principal = principal_of(request)
        message_id = await handoffs.agent_reply(services, principal, handoff_id, data.content)
        handoff = await handoffs.get_handoff(services, principal, handoff_id)
        return AgentReplyResult(
            message_id=message_id,
            handoff_id=handoff.id,
            conversation_id=handoff.conversation_id,
            status=handoff.status,
        )

    @post("/{handoff_id:str}/resolve", status_code=200, summary="Resolve a handoff")
    async def resolve(
        self, request: Request[Any, Any, Any], services: Services, handoff_id: HandoffId
    ) -> HandoffView:
        handoff = await handoffs.resolve(services, principal_of(request), handoff_id)
        return await _detail(services, handoff)
