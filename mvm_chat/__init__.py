"""mvm_chat: answer every message with the minimum viable model.

The names exported here are the public plugin API.
"""

from __future__ import annotations

import pluggy

from mvm_chat.types import Escalation, IntentPrediction, Passage, SkillReply, Turn

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("mvm_chat")
"""Decorator marking a plugin's implementation of an mvm_chat hook."""

__all__ = [
    "Escalation",
    "IntentPrediction",
    "Passage",
    "SkillReply",
    "Turn",
    "__version__",
    "hookimpl",
]
