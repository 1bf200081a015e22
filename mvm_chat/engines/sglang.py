"""The ``sglang`` engine: SGLang's OpenAI-compatible chat, plus its native API where it adds
something: constrained generation on a rendered prompt, generation-based health, what the server
says of its model, and its load from ``/metrics``.

``base_url`` is the server root (``http://HOST:30000``): chat goes to ``{root}/v1``, the native
routes hang off the root. SGLang is never imported: it runs as its own server.

Followed: SGLang 0.5.9, read in the PyPI wheel ``sglang-0.5.9-py3-none-any.whl`` (facts only, no
code), and the docs pages basic_usage/native_api, basic_usage/sampling_params and
advanced_features/structured_outputs:

- ``srt/entrypoints/http_server.py``: ``/health`` and ``/health_generate`` generate one token and
  answer 200 (empty body) once the scheduler replies, polling once a second, so never in under
  about 1 s; 503 when it does not reply within ``SGLANG_HEALTH_CHECK_TIMEOUT`` (20 s), while
  starting or while shutting down; a wedged server can hold the request open, hence our own
  timeout. ``/model_info`` and ``/server_info`` (``/get_model_info`` and ``/get_server_info``
  are their deprecated names, the only ones in older versions). ``/generate`` answers a
  ``ValueError`` with 400 ``{"error": {"message"}}``; a body that fails validation is a 400
  ``ErrorResponse`` (``{"object": "error", "message", "type", "param", "code"}``).
- ``srt/managers/io_struct.py`` (``GenerateReqInput``: ``text`` or ``input_ids``,
  ``sampling_params``, ``return_logprob``, ``stream``) and ``srt/managers/tokenizer_manager.py``
  (the answer's ``text``, ``output_ids`` and ``meta_info``: ``id``, ``finish_reason`` as an object
  whose ``type`` is ``stop``, ``length`` or ``abort``, ``prompt_tokens``, ``completion_tokens``,
  and with ``return_logprob`` ``output_token_logprobs`` as ``[logprob, token_id, text|null]``).
- ``srt/sampling/sampling_params.py``: ``max_new_tokens``, ``temperature``, ``stop``, and at most
  one of ``regex``, ``json_schema``, ``ebnf``.
- ``srt/entrypoints/openai/protocol.py`` (``ChatCompletionRequest`` takes SGLang's own ``regex``
  field next to ``logprobs`` and ``stream_options.include_usage``) and ``serving_chat.py`` (SSE
  chunks, per-chunk ``logprobs.content[].logprob``, a last chunk with an empty delta and the
  ``finish_reason``, ``abort`` included, the usage chunk with empty ``choices``, an error as a
  ``data: {"error": ...}`` event, then ``data: [DONE]``).
- ``/metrics``: see ``sglang_metrics.py``.

Constrained choices go through the chat endpoint's ``regex`` field rather than ``/generate``:
``/generate`` takes a prompt already rendered with the model's chat template, which only the
server knows; :meth:`SglangEngine.generate` serves callers that render their own prompt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec

from mvm_chat.engines.base import (
    EngineHealth,
    GenerationRequest,
    Usage,
)
from mvm_chat.engines.openai import OpenAIEngine
from mvm_chat.engines.openai_wire import (
    Completion,
    checked,
    completion_of,
    shape_error,
    transport_error,
)
from mvm_chat.engines.sglang_metrics import MetricsScraper, SglangLoad
from mvm_chat.engines.sglang_protocol import choice_regex, json_object
from mvm_chat.errors import ConfigError, EngineError
from mvm_chat.settings import ModelSettings

MODEL_INFO_KEYS = (
    "model_path",
    "tokenizer_path",
    "is_generation",
    "model_type",
    "architectures",
    "weight_version",
)
SERVER_INFO_KEYS = (
    "served_model_name",
    "context_length",
    "max_total_num_tokens",
    "max_req_input_len",
    "max_running_requests",
    "tp_size",
    "dp_size",
    "pp_size",
    "ep_size",
    "quantization",
    "dtype",
    "kv_cache_dtype",
    "enable_eplb",
    "expert_distribution_recorder_mode",
    "expert_distribution_recorder_buffer_size",
    "grammar_backend",
)


class SglangEngine(OpenAIEngine):
    """A model served by SGLang at ``base_url`` (the server root, not ``/v1``)."""

    kind = "sglang"
    supports_choices = True

    def __init__(self, config: ModelSettings) -> None:
        if not config.base_url:
            raise ConfigError(
                "models.base_url",
                "required for engine 'sglang': the server root, e.g. http://HOST:30000",
            )
        root = config.base_url.rstrip("/").removesuffix("/v1")
        super().__init__(msgspec.structs.replace(config, base_url=f"{root}/v1"))
        self.root_url = root
        self._scraper = MetricsScraper(
            lambda: self.client,
            f"{root}/metrics",
            config.metrics_interval_s,
            config.connect_timeout_s,
            config.name,
        )

    async def start(self) -> None:
        """Open the HTTP client and start scraping ``/metrics`` in the background."""
        await super().start()
        self._scraper.start()

    async def close(self) -> None:
        """Stop the scraper, then close the HTTP client."""
        await self._scraper.close()
        await super().close()

    # -- load ---------------------------------------------------------------------------------

    def load(self) -> SglangLoad:
        """The server's load at the last scrape of ``/metrics``, with this process's open calls."""
        return self._scraper.snapshot(self._inflight)

    @property
    def queue_depth(self) -> int:
        """Queued plus running requests on the server (last scrape), at least our own calls."""
        return self.load().queue_depth

    def running_requests(self) -> int:
        """``sglang:num_running_reqs`` at the last scrape, at least our own open calls."""
        load = self.load()
        return max(1, load.num_running_reqs, load.inflight)

    # -- chat ---------------------------------------------------------------------------------

    def _body(self, request: GenerationRequest, stream: bool) -> dict[str, Any]:
        body = super()._body(request, stream)
        body["logprobs"] = True
        if request.choices:
            body["regex"] = choice_regex(request.choices)
        return body

    async def complete(self, request: GenerationRequest) -> Completion:
        """One chat completion that is not streamed (``stream: false``), with token logprobs."""
        name = self.config.name
        body = self._body(request, stream=False)
        data = await self._post_json("chat/completions", body)
        answer = completion_of(data, name, request.messages)
        reason = checked(name, request.choices, answer.text, answer.finish_reason)
        return dataclasses.replace(answer, finish_reason=reason)

    # -- native /generate ---------------------------------------------------------------------

    async def generate(
        self,
        text: str,
        *,
        choices: Sequence[str] = (),
        regex: str | None = None,
        json_schema: str | dict[str, Any] | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        stop: Sequence[str] = (),
    ) -> Completion:
        """SGLang's native ``POST /generate`` on a prompt already rendered as ``text``, with
        ``return_logprob``. At most one constraint: ``choices`` (the answer is exactly one of
        them), ``regex``, or ``json_schema`` (a JSON Schema, as a string or a dict)."""
        if sum(1 for c in (choices, regex, json_schema) if c) > 1:
            raise ValueError("give at most one of choices, regex and json_schema")
        sampling: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": temperature}
        if stop:
            sampling["stop"] = list(stop)
        if choices:
            sampling["regex"] = choice_regex(choices)
        elif regex:
            sampling["regex"] = regex
        elif json_schema:
            schema = json_schema if isinstance(json_schema, str) else json.dumps(json_schema)
            sampling["json_schema"] = schema
        body = {"text": text, "sampling_params": sampling, "return_logprob": True}
        name = self.config.name
        data = await self._post_json(f"{self.root_url}/generate", body)
        try:
            meta = data["meta_info"]
            answer = data["text"]
            if not isinstance(answer, str):
                raise TypeError(answer)
            finish = meta.get("finish_reason") or {}
            reason = str(finish.get("type") or "stop") if isinstance(finish, dict) else str(finish)
            entries = meta.get("output_token_logprobs") or []
            logprobs = tuple(float(e[0]) for e in entries if e[0] is not None)
            usage = Usage(int(meta["prompt_tokens"]), int(meta["completion_tokens"]))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise shape_error(name, "/generate") from None
        return Completion(answer, logprobs, usage, checked(name, choices, answer, reason))

    async def _post_json(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        name = self.config.name
        self._inflight += 1
        try:
            response = await self.client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise transport_error(name, exc) from None
        finally:
            self._inflight -= 1
        return json_object(name, response)

    # -- health and facts ---------------------------------------------------------------------

    async def health(self) -> EngineHealth:
        """``GET /health_generate`` (SGLang generates one token), given ``connect_timeout_s``:
        a server that does not answer in time is unhealthy, never a hang."""
        timeout = self.config.connect_timeout_s
        try:
            async with asyncio.timeout(timeout + 0.5):
                response = await self.client.get(
                    f"{self.root_url}/health_generate", timeout=timeout
                )
        except (TimeoutError, httpx.TimeoutException):
            return EngineHealth(False, f"/health_generate did not answer within {timeout:g}s")
        except httpx.HTTPError as exc:
            return EngineHealth(False, f"unreachable ({type(exc).__name__})")
        if response.status_code != 200:
            return EngineHealth(False, f"/health_generate answered HTTP {response.status_code}")
        return EngineHealth(True)

    async def model_info(self) -> dict[str, Any]:
        """What the server says of its model and how it serves it (:meth:`server_facts`), and
        its load; when it cannot be asked, ``error`` says why."""
        info: dict[str, Any] = {
            "engine": self.kind,
            "base_url": self.root_url,
            "upstream_model": self.upstream_model,
        }
        try:
            info.update(await self.server_facts())
        except EngineError as exc:
            info["error"] = exc.detail
        load = self.load()
        info["load"] = {**dataclasses.asdict(load), "queue_depth": load.queue_depth}
        return info

    async def server_facts(self) -> dict[str, Any]:
        """Selected keys of ``/model_info`` and ``/server_info`` (or, on versions without them,
        ``/get_model_info`` and ``/get_server_info``); raises :class:`EngineError`."""
        model = await self._info("model_info")
        server = await self._info("server_info")
        facts: dict[str, Any] = {k: model[k] for k in MODEL_INFO_KEYS if k in model}
        facts.update({k: server[k] for k in SERVER_INFO_KEYS if k in server})
        if "version" in server:
            facts["sglang_version"] = server["version"]
        states = server.get("internal_states")
        if isinstance(states, list) and states and isinstance(states[0], dict):
            for key in ("last_gen_throughput", "memory_usage"):
                if key in states[0]:
                    facts[key] = states[0][key]
        return facts

    async def _info(self, route: str) -> dict[str, Any]:
        name = self.config.name
        for path in (route, f"get_{route}"):
            try:
                response = await self.client.get(
                    f"{self.root_url}/{path}", timeout=self.config.connect_timeout_s
                )
            except httpx.HTTPError as exc:
                raise transport_error(name, exc) from None
            if response.status_code != 404:
                return json_object(name, response)
        raise EngineError(f"model {name}: the server has neither /{route} nor /get_{route}")
