"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

MaxTokens = Annotated[int, Meta(ge=1, le=8192)]
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
Text = Annotated[str, Meta(min_length=1, max_length=100_000)]


class ContentPart(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None


class ChatMessageIn(msgspec.Struct, kw_only=True):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct, kw_only=True):
    """OpenAI's chat completion request (the fields mvm_chat uses; others are ignored)."""

    model: Annotated[str, Meta(min_length=1, max_length=200)]
    messages: Annotated[list[ChatMessageIn], Meta(min_length=1, max_length=1000)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None


class NewConversation(msgspec.Struct, kw_only=True):
    title: Annotated[str, Meta(max_length=200)] = ""


class MessageRequest(msgspec.Struct, kw_only=True):
    """A user message on the native API."""

    content: Text
    model: Annotated[str, Meta(min_length=1, max_length=200)] = "auto"
    stream: bool = False
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None


class ConversationSummary(msgspec.Struct, kw_only=True):
    id: str
    title: str
    status: str
    created_at: str
    updated_at: str


class ConversationList(msgspec.Struct, kw_only=True):
    data: list[ConversationSummary]
    limit: int
    offset: int


class StoredMessage(msgspec.Struct, kw_only=True):
    id: str
    role: str
    content: str
    created_at: str
    model: str | None
    tier: str | None
    intent: str | None = None
    passages: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """Sources and scores of the passages the answer was given."""


class ConversationDetail(msgspec.Struct, kw_only=True):
    id: str
    title: str
    created_at: str
    status: str
    messages: list[StoredMessage]
    cost_usd: str
    baseline_cost_usd: str
    savings_usd: str


class MessageReply(msgspec.Struct, kw_only=True):
    id: str
    conversation_id: str
    role: str
    content: str
    model: str
    tier: str
    mvm: dict[str, Any]


class ModelCard(msgspec.Struct, kw_only=True):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "mvm_chat"
    tier: str = ""
    engine: str = ""


class ModelList(msgspec.Struct, kw_only=True):
    object: str = "list"
    data: list[ModelCard] = msgspec.field(default_factory=list)
