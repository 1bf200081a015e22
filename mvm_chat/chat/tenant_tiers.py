"""The tiers a tenant may use (``[tenants.NAME] allowed_tiers``) and a request's size limits.

A tenant's turns are routed with :func:`tenant_settings`: the catalog cut down to the models of
its allowed tiers, so that ``auto`` routing, escalation policies, intent floors, fallbacks and the
budget's free model can only ever pick among them. A request that names a model of another tier
is refused with 403. A handoff to a person is not a model tier and stays open to every tenant.
"""

from __future__ import annotations

import re

import msgspec

from mvm_chat.chat.router import AUTO
from mvm_chat.chat.turns import TurnRequest
from mvm_chat.errors import Forbidden, InvalidInput, NotFound
from mvm_chat.settings import LimitsSettings, Settings


def tenant_settings(settings: Settings, tenant: str, requested: str = AUTO) -> Settings:
    """``settings`` as ``tenant``'s turns see them; :class:`Forbidden` when ``requested``
    names a catalog model on a tier the tenant may not use."""
    policy = settings.tenants.get(tenant)
    if policy is None or not policy.allowed_tiers:
        return settings
    allowed = policy.allowed_tiers
    named = settings.model(requested) if requested != AUTO else None
    if named is not None and named.tier not in allowed:
        raise Forbidden(f"model {requested!r} is on tier {named.tier!r}, not open to this key")
    models = [m for m in settings.models if m.tier in allowed]
    tiers = settings.tier_names
    with_models = [t for t in tiers if any(m.tier == t for m in models)]
    start = tiers.index(settings.routing.default_tier)
    # the default tier, else the nearest allowed one above it, else the highest below it
    above = [t for t in with_models if tiers.index(t) >= start]
    default = above[0] if above else with_models[-1]
    routing = msgspec.structs.replace(settings.routing, default_tier=default)
    return msgspec.structs.replace(settings, models=models, routing=routing)


def check_size(limits: LimitsSettings, request: TurnRequest) -> None:
    """:class:`InvalidInput` when the request has too many messages, too long a one, or a NUL
    character (which Postgres cannot store: refused before any model is called);
    :class:`NotFound` for a conversation id that no conversation can have."""
    if request.conversation_id is not None and not ID.fullmatch(request.conversation_id):
        raise NotFound(f"conversation {request.conversation_id!r} not found")
    if request.prompt is None:
        _check_text("content", request.text, limits)
        return
    if len(request.prompt) > limits.max_messages:
        raise InvalidInput("messages", f"more than {limits.max_messages} messages")
    for i, message in enumerate(request.prompt):
        _check_text(f"messages[{i}].content", message.content, limits)


ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""What a stored id looks like (``new_id()``: 32 hex digits)."""


def _check_text(field: str, text: str, limits: LimitsSettings) -> None:
    if len(text) > limits.max_message_chars:
        raise InvalidInput(field, f"longer than {limits.max_message_chars} characters")
    if "\x00" in text:
        raise InvalidInput(field, "contains a NUL (\\u0000) character")
