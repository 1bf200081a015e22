"""Before a turn runs: the conversation checked, its history loaded, the prompt built."""

from __future__ import annotations

from mvm_chat.chat import router
from mvm_chat.chat.services import Services
from mvm_chat.chat.tenant_tiers import check_size, tenant_settings
from mvm_chat.chat.turns import PreparedTurn, TurnRequest
from mvm_chat.engines.base import ChatMessage
from mvm_chat.errors import NotFound
from mvm_chat.store.conversations import get_conversation, list_messages
from mvm_chat.store.models import new_id
from mvm_chat.types import Turn


async def prepare_turn(services: Services, request: TurnRequest) -> PreparedTurn:
    """Check the conversation, load its history, choose the model and build the prompt.

    Raises before anything is streamed or stored (unknown conversation or model).
    """
    check_size(services.settings.limits, request)
    settings = tenant_settings(services.settings, request.principal.tenant, request.model)
    route = router.choose(settings, request.model)
    history: list[ChatMessage] = []
    routing = router.RoutingState()
    handed_off = False
    conversation_id = request.conversation_id
    if conversation_id is not None:
        async with services.db.session() as session:
            conversation = await get_conversation(
                session, request.principal.tenant_id, conversation_id
            )
            if conversation is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
            routing = router.RoutingState.from_metadata(conversation.metadata_)
            handed_off = conversation.status == "handoff"
            stored = await list_messages(
                session, conversation_id, last=services.settings.chat.history_messages
            )
        history = [ChatMessage(m.role, m.content) for m in stored if m.role in _ROLES]
    prompt = _build_prompt(services, request, history)
    turn = Turn(
        text=request.text,
        conversation_id=conversation_id or new_id(),
        tenant=request.principal.tenant,
        history=[(m.role, m.content) for m in history],
    )
    return PreparedTurn(
        request=request,
        conversation_id=turn.conversation_id,
        is_new_conversation=conversation_id is None,
        route=route,
        prompt=prompt,
        turn=turn,
        routing=routing,
        handed_off=handed_off,
    )


_ROLES = ("user", "assistant")


def _build_prompt(
    services: Services, request: TurnRequest, history: list[ChatMessage]
) -> list[ChatMessage]:
    if request.prompt is not None:
        system = [m for m in request.prompt if m.role == "system"]
        others = [m for m in request.prompt if m.role != "system"]
        if history and len(others) == 1:
            return [*system, *history, *others]
        return list(request.prompt)
    system_prompt = services.settings.chat.system_prompt
    system = [ChatMessage("system", system_prompt)] if system_prompt else []
    return [*system, *history, ChatMessage("user", request.text)]
