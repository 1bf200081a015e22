"""Step 3 of a turn: a skill that claims the intent answers without a model."""

from __future__ import annotations

from mvm_chat.chat.components import Component, Components
from mvm_chat.types import SkillReply, Turn


async def answer_by_skill(
    components: Components, turn: Turn
) -> tuple[Component, SkillReply] | None:
    """The first skill whose ``intents`` hold the turn's label and that returns a reply."""
    if turn.intent is None:
        return None
    for skill in components.of("skill"):
        intents = getattr(skill.obj, "intents", ())
        if turn.intent.label not in intents:
            continue
        reply = await components.call(skill, "handle", turn)
        if isinstance(reply, SkillReply) and reply.text:
            return skill, reply
    return None
