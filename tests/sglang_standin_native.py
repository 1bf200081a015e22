"""The SGLang stand-in's native routes: ``/generate``, ``/model_info`` and ``/server_info`` (and
the deprecated ``/get_model_info`` and ``/get_server_info``)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, get, route
from litestar.response import Response, Stream

from tests.sglang_standin_core import (
    GENERATE_TYPES,
    SAMPLING_KEYS,
    StandIn,
    canned,
    frame,
    grammar_problem,
    invalid,
    json_body,
    native_error,
    new_rid,
    output_logprobs,
    prompt_ids,
    type_problem,
    verify,
)
from tests.sglang_standin_text import Answer, token_id

SGLANG_VERSION = "0.5.9"
NOT_FOUND = {"detail": "Not Found"}


def generate_output(
    standin: StandIn,
    rid: str,
    ids: list[int],
    result: Answer,
    upto: int,
    logprobs: bool,
    with_text: bool,
    started: float,
) -> dict[str, Any]:
    """One ``/generate`` answer (or stream frame) with ``upto`` tokens generated so far."""
    finished = upto == len(result.pieces)
    pieces = result.pieces[:upto]
    meta: dict[str, Any] = {
        "id": rid,
        "finish_reason": result.finish if finished else None,
        "prompt_tokens": len(ids),
        "weight_version": "default",
        "total_retractions": 0,
    }
    if logprobs:
        meta["input_token_logprobs"] = [[None, ids[-1], None]]
        meta["output_token_logprobs"] = output_logprobs(standin, pieces, with_text)
    meta["completion_tokens"] = upto
    meta["cached_tokens"] = 0
    if finished:
        meta["e2e_latency"] = time.time() - started
    return {"text": "".join(pieces), "output_ids": [token_id(p) for p in pieces], "meta_info": meta}


def first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def native_routes(standin: StandIn, served: str) -> list[Any]:
    """The route handlers, over ``standin``; ``served`` is the served model name."""
    args = standin.args

    @route("/generate", http_method=["POST", "PUT"], status_code=200)
    async def generate(request: Request[Any, Any, Any]) -> Response[Any]:
        body, error = await standin.read(request)
        if error is not None:
            return error
        replaced = await standin.before("generate")
        if replaced is not None:
            return replaced
        problem = type_problem(body, GENERATE_TYPES)
        if problem:
            return invalid(problem)
        text, ids = body.get("text"), body.get("input_ids")
        if text is None and ids is None:
            return native_error("Either text, input_ids or input_embeds should be provided.")
        if ids is not None and not ids:
            return native_error("input_ids cannot be empty.")
        if ids is not None:
            batch = isinstance(ids[0], list)
            prompts: list[Any] = ids if batch else [ids]
        else:
            batch = isinstance(text, list)
            prompts = text if batch else [text]
        sampling = {"max_new_tokens": 128, **(first(body.get("sampling_params")) or {})}
        if set(sampling) - SAMPLING_KEYS:  # SamplingParams(**...) raises TypeError: a plain 500
            return Response(b"Internal Server Error", status_code=500, media_type="text/plain")
        problem = verify(sampling) or grammar_problem(sampling)
        if problem:
            return native_error(problem)
        stream = bool(body.get("stream"))
        if batch and stream:
            return native_error("the stand-in does not stream batches")
        outputs: list[tuple[list[int], Answer]] = []
        for prompt in prompts:
            hint = prompt if isinstance(prompt, str) else ""
            prompt_tokens = prompt_ids(prompt) if isinstance(prompt, str) else list(prompt)
            try:
                outputs.append((prompt_tokens, canned(standin, hint, sampling, len(prompt_tokens))))
            except ValueError as exc:
                return Response(str(exc).encode(), status_code=500, media_type="text/plain")
        logprobs = bool(first(body.get("return_logprob")))
        with_text = bool(body.get("return_text_in_logprobs"))
        started = time.time()
        rid = first(body.get("rid")) or new_rid()
        if not stream:
            results = [
                generate_output(
                    standin, new_rid(), p, a, len(a.pieces), logprobs, with_text, started
                )
                for p, a in outputs
            ]
            if not batch:
                results[0]["meta_info"]["id"] = rid
            tokens = max((len(a.pieces) for _, a in outputs), default=0)
            return await standin.whole("generate", results if batch else results[0], tokens)
        prompt_tokens, result = outputs[0]

        async def frames() -> AsyncIterator[bytes]:
            for upto in range(1 if result.pieces else 0, len(result.pieces) + 1):
                output = generate_output(
                    standin, rid, prompt_tokens, result, upto, logprobs, with_text, started
                )
                yield frame(output)
            yield b"data: [DONE]\n\n"

        return Stream(standin.frames("generate", frames()), media_type="text/event-stream")

    def model_info_body() -> dict[str, Any]:
        return {
            "model_path": args.model_path,
            "tokenizer_path": args.model_path,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": "default",
            "has_image_understanding": False,
            "has_audio_understanding": False,
            "model_type": args.model_type,
            "architectures": [args.architecture],
        }

    def server_info_body() -> dict[str, Any]:
        server_args = {
            "model_path": args.model_path,
            "tokenizer_path": args.model_path,
            "served_model_name": served,
            "host": args.host,
            "port": args.port,
            "context_length": args.context_length,
            "dtype": "auto",
            "quantization": args.quantization,
            "kv_cache_dtype": "auto",
            "mem_fraction_static": 0.836,
            "max_running_requests": 128,
            "max_queued_requests": None,
            "chunked_prefill_size": 8192,
            "schedule_policy": "fcfs",
            "tp_size": args.tp_size,
            "pp_size": 1,
            "dp_size": args.dp_size,
            "ep_size": args.ep_size,
            "enable_metrics": not args.disable_metrics,
            "enable_eplb": args.enable_eplb,
            "expert_distribution_recorder_mode": args.expert_distribution_recorder_mode,
            "expert_distribution_recorder_buffer_size": (
                args.expert_distribution_recorder_buffer_size
            ),
            "grammar_backend": "xgrammar",
            "api_key": None,
        }
        state = {
            **server_args,
            "last_gen_throughput": standin.control.gen_throughput,
            "memory_usage": {"weight": 5.9, "kvcache": 2.3, "token_capacity": 20480, "graph": 0.4},
            "effective_max_running_requests_per_dp": 128,
        }
        return {
            **server_args,
            "status": "ready",
            "max_total_num_tokens": 20480,
            "max_req_input_len": args.context_length - 5,
            "internal_states": [state],
            "version": SGLANG_VERSION,
        }

    async def info(request: Request[Any, Any, Any], name: str) -> Response[Any]:
        standin.requests.append({"path": request.url.path, "body": None})
        replaced = await standin.before(name)
        if replaced is not None:
            return replaced
        if standin.fault(name) == "legacy" and not request.url.path.startswith("/get_"):
            return json_body(NOT_FOUND, 404)
        return json_body(model_info_body() if name == "model_info" else server_info_body())

    @get(["/model_info", "/get_model_info"])
    async def model_info(request: Request[Any, Any, Any]) -> Response[Any]:
        return await info(request, "model_info")

    @get(["/server_info", "/get_server_info"])
    async def server_info(request: Request[Any, Any, Any]) -> Response[Any]:
        return await info(request, "server_info")

    return [generate, model_info, server_info]
