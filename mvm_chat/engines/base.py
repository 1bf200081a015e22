"""The Engine protocol and the values an engine streams back."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from mvm_chat.settings import ModelSettings


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a prompt."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What to generate: a chat prompt and sampling limits."""

    messages: list[ChatMessage]
    max_tokens: int = 256
    temperature: float = 0.2
    stop: list[str] = field(default_factory=list)
    choices: tuple[str, ...] = ()
    """When set, the answer is exactly one of these strings (constrained decoding); an engine
    that cannot constrain its output raises :class:`~mvm_chat.errors.EngineError`."""
    stream: bool = True
    """Whether the caller takes the answer as it is generated. When False an engine may
    yield the whole answer as one :class:`TokenDelta` (a remote one then asks its server
    for an answer that is not streamed, which costs both sides less)."""


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """A piece of the answer as it is generated, and how many tokens it holds."""

    text: str
    tokens: int = 1
    logprobs: tuple[float, ...] = ()
    """The natural-log probability of each token, where the engine reports them."""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Finished:
    """The last event of a stream: token counts and why generation stopped."""

    usage: Usage
    finish_reason: str = "stop"


StreamEvent = TokenDelta | Finished


def estimate_tokens(messages: list[ChatMessage]) -> int:
    """A prompt's size in tokens at about 4 characters a token, for when no count is known."""
    chars = sum(len(m.content) + len(m.role) + 4 for m in messages)
    return max(1, -(-chars // 4))


@dataclass(frozen=True, slots=True)
class EngineHealth:
    ok: bool
    detail: str = ""


@runtime_checkable
class Engine(Protocol):
    """A model behind one catalog entry. Engines know nothing of turns or storage."""

    kind: str
    config: ModelSettings

    async def start(self) -> None:
        """Load the model or open connections; called once at app start."""

    async def close(self) -> None:
        """Release what ``start`` acquired."""

    def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        """Generate, yielding :class:`TokenDelta` items then one :class:`Finished`."""
        ...

    async def health(self) -> EngineHealth:
        """Whether the engine can serve now."""
        ...

    async def model_info(self) -> dict[str, Any]:
        """What is known of the model (architecture, context length, ...)."""
        ...

    @property
    def queue_depth(self) -> int:
        """Requests waiting or running on this engine now."""
        ...


@runtime_checkable
class SharedEngine(Protocol):
    """An engine whose server runs many requests at once on the same hardware."""

    def running_requests(self) -> int:
        """Requests the server is running now (at least this process's own open calls)."""
        ...


class EngineFactory(Protocol):
    def __call__(self, model_config: ModelSettings) -> Engine: ...
