"""A stand-in for an SGLang server in tests: SGLang 0.5.9's HTTP protocol, canned answers.

Run ``python -m tests.sglang_standin --port PORT [--served-model-name NAME] [--dp-size N]``.

Followed: SGLang 0.5.9, read in the PyPI wheel ``sglang-0.5.9-py3-none-any.whl`` (facts only, no
code copied), and the docs pages basic_usage/native_api and advanced_features/structured_outputs:

- ``srt/entrypoints/http_server.py``: the routes. ``/health`` and ``/health_generate`` answer 200
  with an empty body after their first one-second poll, 503 when unhealthy. ``/model_info`` and
  ``/server_info``, and their deprecated names ``/get_model_info`` and ``/get_server_info``.
  ``/generate`` streams ``data: {json}\\n\\n`` frames whose ``text`` is cumulative, then
  ``data: [DONE]\\n\\n``; its ``ValueError`` is a 400 ``{"error": {"message"}}``; a body that fails
  validation is a 400 ``{"object": "error", "message", "type": "Bad Request", "param": null,
  "code": 400}``; ``/v1/chat/completions`` requires ``Content-Type: application/json``.
- ``srt/managers/io_struct.py`` (``GenerateReqInput``), ``srt/managers/tokenizer_manager.py``
  (``meta_info`` keys in order; ``output_token_logprobs`` as ``[logprob, token_id, text|null]``;
  ``input_token_logprobs`` from the last prompt token, with a null logprob), and
  ``srt/managers/schedule_batch.py`` (finish reasons ``{"type": "stop", "matched"}``,
  ``{"type": "length", "length"}``, ``{"type": "abort", ...}``).
- ``srt/sampling/sampling_params.py``: the keys ``sampling_params`` takes (an unknown one is a
  ``TypeError`` that reaches FastAPI as a plain-text 500) and ``verify()``'s errors.
- ``srt/entrypoints/openai/protocol.py``, ``serving_base.py``, ``serving_chat.py`` and
  ``usage_processor.py``: chat chunks (a first chunk with the role and empty content, one chunk
  per new text with its ``logprobs.content``, a last chunk with an all-null delta, the
  ``finish_reason`` and ``matched_stop``, the usage chunk with empty ``choices`` when
  ``stream_options.include_usage``); an error before the first token is a
  ``data: {"error": {...}}`` event in a 200 stream; non-streamed errors are ``ErrorResponse`` with
  type ``BadRequestError``.
- ``srt/metrics/collector.py``, ``srt/managers/scheduler_metrics_mixin.py`` and
  ``srt/utils/common.py``: ``/metrics`` (see ``tests/sglang_standin_text.py``).

Faults are scripted per test through routes SGLang does not have:
``POST /_standin/control`` with any of ``faults`` (``{ROUTE: FAULT}``, merged),
``num_queue_reqs``, ``num_running_reqs``, ``token_usage``, ``gen_throughput``,
``health_delay_s`` (1.0, like SGLang's poll), ``token_delay_s``, ``logprob`` (every token's) and
``hold_stop`` (see ``tests/sglang_standin_experts.py``: the expert-distribution recorder of a MoE
model, ``GET /_standin/experts``, routes ``start_expert``, ``stop_expert``, ``dump_expert``);
``POST /_standin/reset`` (which also ends every hang); ``GET /_standin/requests`` (bodies seen).
ROUTE is ``chat``, ``generate``, ``health``, ``model_info``, ``server_info`` or ``metrics``.
FAULT is ``hang`` (no answer until reset), ``status:NNN``, ``garbage`` (200, a body of the
wrong kind), ``garbage_chunk`` (a malformed ``data:`` line), ``truncate`` (two frames, then a
clean end without finish or ``[DONE]``), ``drop`` (two frames, then the connection is cut),
``stall`` (two frames, then silence until reset), or ``legacy`` (``/model_info`` or
``/server_info`` are 404, as before their rename).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import fields
from typing import Any

import uvicorn
from litestar import Litestar, get, post
from litestar.exceptions import ValidationException
from litestar.response import Response

from tests.sglang_standin_chat import chat_routes
from tests.sglang_standin_core import Control, StandIn, json_body
from tests.sglang_standin_experts import add_arguments, expert_routes, finish_arguments
from tests.sglang_standin_native import native_routes
from tests.sglang_standin_text import metrics_text


def create_app(args: argparse.Namespace) -> Litestar:
    """The stand-in's routes, over one :class:`StandIn`."""
    standin = StandIn(args)
    served = args.served_model_name or args.model_path

    @post("/_standin/control", status_code=200)
    async def control(data: dict[str, Any]) -> dict[str, Any]:
        known = {f.name for f in fields(Control)}
        unknown = set(data) - known
        if unknown:
            raise ValidationException(f"unknown control keys: {sorted(unknown)}")
        for key, value in data.items():
            if key == "faults":
                standin.control.faults.update(value)
            else:
                setattr(standin.control, key, value)
        return {"ok": True}

    @post("/_standin/reset", status_code=200)
    async def reset() -> dict[str, Any]:
        standin.reset()
        return {"ok": True}

    @get("/_standin/requests")
    async def requests() -> list[dict[str, Any]]:
        return standin.requests

    @get(["/health", "/health_generate"])
    async def health() -> Response[Any]:
        replaced = await standin.before("health")
        if replaced is not None:
            return replaced
        await asyncio.sleep(standin.control.health_delay_s)
        return Response(b"", status_code=200)

    @get("/metrics")
    async def metrics() -> Response[Any]:
        replaced = await standin.before("metrics")
        if replaced is not None:
            return replaced
        if args.disable_metrics:
            return json_body({"detail": "Not Found"}, 404)
        c = standin.control
        gauges = {
            "sglang:num_running_reqs": float(c.num_running_reqs + standin.live),
            "sglang:num_queue_reqs": float(c.num_queue_reqs),
            "sglang:token_usage": float(c.token_usage),
            "sglang:gen_throughput": float(c.gen_throughput),
        }
        text = metrics_text(served, gauges, standin.counters, args.dp_size)
        return Response(text.encode(), media_type="text/plain; version=0.0.4; charset=utf-8")

    handlers = [control, reset, requests, health, metrics]
    handlers += native_routes(standin, served)
    handlers += chat_routes(standin, served)
    handlers += expert_routes(standin)
    return Litestar(route_handlers=handlers, openapi_config=None, debug=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--model-path", default="HuggingFaceTB/SmolLM3-3B")
    parser.add_argument("--served-model-name", default="")
    parser.add_argument("--model-type", default="smollm3")
    parser.add_argument("--architecture", default="SmolLM3ForCausalLM")
    parser.add_argument("--context-length", type=int, default=65536)
    parser.add_argument("--tp-size", type=int, default=1)
    parser.add_argument("--dp-size", type=int, default=1)
    parser.add_argument("--ep-size", type=int, default=1)
    parser.add_argument("--quantization", default=None)
    parser.add_argument(
        "--disable-metrics", action="store_true", help="as without --enable-metrics"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    finish_arguments(parser, args)
    uvicorn.run(
        create_app(args),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
