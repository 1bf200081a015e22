"""The native conversation API: create, list, read, and send a message (JSON or SSE)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from decimal import Decimal
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter
from litestar.types import ASGIApp
from sqlalchemy import func, select

from mvm_chat.api.auth import principal_of
from mvm_chat.api.openapi import problems
from mvm_chat.api.schemas import (
    ConversationDetail,
    ConversationList,
    ConversationSummary,
    MessageReply,
    MessageRequest,
    NewConversation,
    StoredMessage,
)
from mvm_chat.api.turns import answer, begin_turn, event_stream, frames, json_reply, sse
from mvm_chat.chat.services import Services
from mvm_chat.chat.turns import TurnEvent, TurnRequest
from mvm_chat.errors import NotFound
from mvm_chat.ledger.pricing import show
from mvm_chat.store.conversations import get_conversation, list_conversations, list_messages
from mvm_chat.store.models import Conversation, LedgerEntry

ConversationId = Annotated[str, Parameter(max_length=64, description="Conversation id")]


def _iso(value: Any) -> str:
    return str(value.isoformat())


def _summary(c: Conversation) -> ConversationSummary:
    return ConversationSummary(
        id=c.id,
        title=c.title,
        status=c.status,
        created_at=_iso(c.created_at),
        updated_at=_iso(c.updated_at),
    )


async def _sse_frames(events: AsyncGenerator[TurnEvent, None]) -> AsyncIterator[bytes]:
    async for item in frames(events):
        yield sse(item)


class ConversationController(Controller):
    path = "/v1/conversations"
    tags = ["conversations"]

    @post("/", status_code=201, summary="Start a conversation")
    async def create(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        data: NewConversation | None = None,
    ) -> ConversationSummary:
        principal = principal_of(request)
        async with services.db.transaction() as session:
            conversation = Conversation(
                tenant_id=principal.tenant_id, title=data.title if data else ""
            )
            session.add(conversation)
            await session.flush()
        return _summary(conversation)

    @get("/", summary="The caller's conversations, newest first")
    async def index(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
        offset: Annotated[int, Parameter(ge=0, le=1_000_000)] = 0,
    ) -> ConversationList:
        principal = principal_of(request)
        async with services.db.session() as session:
            rows = await list_conversations(session, principal.tenant_id, limit, offset)
        return ConversationList(data=[_summary(c) for c in rows], limit=limit, offset=offset)

    @get("/{conversation_id:str}", summary="A conversation with its messages, oldest first")
    async def detail(
        self, request: Request[Any, Any, Any], services: Services, conversation_id: ConversationId
    ) -> ConversationDetail:
        principal = principal_of(request)
        async with services.db.session() as session:
            conversation = await get_conversation(session, principal.tenant_id, conversation_id)
            if conversation is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
            messages = await list_messages(session, conversation_id)
            cost, baseline = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(LedgerEntry.cost_usd), 0),
                        func.coalesce(func.sum(LedgerEntry.baseline_cost_usd), 0),
                    ).where(
                        LedgerEntry.conversation_id == conversation_id,
                        LedgerEntry.tenant_id == principal.tenant_id,
                    )
                )
            ).one()
        cost, baseline = Decimal(cost), Decimal(baseline)
        return ConversationDetail(
            id=conversation.id,
            title=conversation.title,
            created_at=_iso(conversation.created_at),
            status=conversation.status,
            messages=[
                StoredMessage(
                    id=m.id,
                    role=m.role,
                    content=m.content,
                    created_at=_iso(m.created_at),
                    model=m.model,
                    tier=m.tier,
                    intent=m.intent,
                    passages=list((m.metadata_ or {}).get("passages", [])),
                )
                for m in messages
            ],
            cost_usd=show(cost),
            baseline_cost_usd=show(baseline),
            savings_usd=show(baseline - cost),
        )

    @post(
        "/{conversation_id:str}/messages",
        status_code=200,
        summary="Send a message; the reply is JSON, or server-sent events with stream: true",
        responses=problems(409, 502),
    )
    async def send(
        self,
        request: Request[Any, Any, Any],
        services: Services,
        conversation_id: ConversationId,
        data: MessageRequest,
    ) -> ASGIApp:
        turn = TurnRequest(
            principal=principal_of(request),
            text=data.content,
            request_id=request.state.request_id,
            conversation_id=conversation_id,
            model=data.model,
            max_tokens=data.max_tokens,
            temperature=data.temperature,
            use_cache="no-cache" not in request.headers.get("cache-control", ""),
            streams=bool(data.stream),
        )
        events, _ = await begin_turn(request, services, turn)
        if data.stream:
            return event_stream(request, _sse_frames(events), {})
        result = await answer(events)
        return json_reply(
            MessageReply(
                id=result.message_id,
                conversation_id=result.conversation_id,
                role="assistant",
                content=result.text,
                model=result.model,
                tier=result.tier,
                mvm=result.mvm(),
            )
        )
