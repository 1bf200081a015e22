"""The SGLang stand-in's expert-distribution recorder: ``/start_expert_distribution_record``,
``/stop_expert_distribution_record`` and ``/dump_expert_distribution_record``.

Followed: SGLang 0.5.9, read in the PyPI wheel ``sglang-0.5.9-py3-none-any.whl`` (facts only, no
code copied):

- ``srt/entrypoints/http_server.py``: the three routes take GET or POST, no body, are
  ``AuthLevel.ADMIN_OPTIONAL`` and answer 200 with a plain-text line ("Start recording the expert
  distribution.", "Stop recording the expert distribution.", "Dump expert distribution
  record.") once the scheduler has acted; nothing of the record comes back over HTTP.
- ``srt/managers/scheduler.py`` (``expert_distribution_handle``) and
  ``srt/eplb/expert_distribution.py``: without ``--expert-distribution-recorder-mode`` the
  recorder is a no-op that *raises* on start, stop and dump; the scheduler process logs "Scheduler
  hit an exception" and sends SIGQUIT to the server, which goes down without an answer (so does
  the stand-in). Start clears the record (warning when already recording); stop only warns when
  not recording; dump resets the record.
  In ``stat`` mode every forward pass appends its ``[layers, experts]`` selection counts (summed
  over the ranks by an all-reduce) to a buffer of ``--expert-distribution-recorder-buffer-size``
  passes: circular when >= 0 (its rows are zeroed on reset, its write index is not; the dump has
  all ``buffer_size`` rows), growing when -1. The dump is ``torch.save`` of ``{"rank": 0,
  "logical_count": int32 tensor [passes, layers, experts], "average_utilization_rate_over_window":
  None}`` to ``$SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR/expert_distribution_recorder_{time}.pt``
  (default directory ``/tmp``). ``per_pass`` and ``per_token`` write per-rank files
  ``..._{time}_{rank}.pt`` of ``{"records": [...], "last_physical_to_logical_map"}`` instead.
- ``srt/server_args.py``: ``--enable-eplb`` sets the mode to ``stat`` when unset; an unset buffer
  size becomes ``--eplb-rebalance-num-iterations`` (1000); a recorder mode on a model without
  experts fails at start-up (no ``ExpertLocationMetadata``).

The stand-in's model has ``--num-hidden-layers`` layers of ``--num-local-experts`` experts and
routes every token it processes (a prefill pass over the prompt, then one decode pass per
generated token but the last, as a real forward loop does) to ``--num-experts-per-tok`` distinct
experts, drawn by a seeded generator from Zipf-like weights ``1 / (rank + 1) ** skew`` whose
hottest expert shifts by one per layer (``--expert-skew``; 0 is uniform).
``GET /_standin/experts`` reports what it routed while recording (the ground truth); the control
``hold_stop`` keeps ``/stop_expert_distribution_record`` waiting until it is set false again.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

from litestar import Request, get, route
from litestar.response import Response

from tests.sglang_standin_core import StandIn, json_body

log = logging.getLogger("sglang_standin")
EPLB_REBALANCE_NUM_ITERATIONS = 1000
MODES = ("stat", "stat_approx", "per_pass", "per_token")
DUMP_DIR_ENV = "SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The stand-in's model shape (from the model's config in SGLang) and SGLang's recorder
    server arguments."""
    parser.add_argument("--num-hidden-layers", type=int, default=4)
    parser.add_argument("--num-local-experts", type=int, default=0, help="0: a dense model")
    parser.add_argument("--num-experts-per-tok", type=int, default=2)
    parser.add_argument("--expert-skew", type=float, default=1.0)
    parser.add_argument("--enable-eplb", action="store_true")
    parser.add_argument("--expert-distribution-recorder-mode", choices=MODES, default=None)
    parser.add_argument("--expert-distribution-recorder-buffer-size", type=int, default=None)


def finish_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What ``ServerArgs.__post_init__`` does to the recorder arguments, and its start-up
    failures."""
    if args.enable_eplb and args.expert_distribution_recorder_mode is None:
        args.expert_distribution_recorder_mode = "stat"
    if args.expert_distribution_recorder_buffer_size is None:
        args.expert_distribution_recorder_buffer_size = EPLB_REBALANCE_NUM_ITERATIONS
    mode = args.expert_distribution_recorder_mode
    if mode is not None and args.num_local_experts < 1:
        parser.error("ExpertLocationMetadata is required for expert distribution recording")
    if mode == "stat_approx":
        parser.error("stat_approx needs the DeepEP normal all-to-all backend (NotImplementedError)")


class ExpertRecorder:
    """The recorder of one stand-in: its buffer of per-pass counts and the ground truth."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.layers: int = args.num_hidden_layers
        self.experts: int = args.num_local_experts
        self.top_k: int = min(args.num_experts_per_tok, max(self.experts, 1))
        self.mode: str | None = args.expert_distribution_recorder_mode
        self.size: int = args.expert_distribution_recorder_buffer_size
        self.recording = False
        self.passes = 0
        self.index = 0
        self.rows: list[list[list[int]]] = [self._zeros() for _ in range(max(self.size, 0))]
        self.records: list[dict[str, Any]] = []
        self.truth = self._zeros()
        self.truth_tokens = 0
        self.truth_passes = 0

    def _zeros(self) -> list[list[int]]:
        return [[0] * self.experts for _ in range(self.layers)]

    def reset(self) -> None:
        for row in self.rows if self.size >= 0 else ():
            for layer in row:
                layer[:] = [0] * self.experts
        if self.size < 0:
            self.rows = []
        self.records = []

    def start(self) -> None:
        if self.recording:
            log.warning("SGLang server is already recording expert ids.")
        self.reset()
        self.truth, self.truth_tokens, self.truth_passes = self._zeros(), 0, 0
        self.recording = True

    def stop(self) -> None:
        if not self.recording:
            log.warning("SGLang server has not been recording expert ids.")
        self.recording = False

    def weights(self, layer: int) -> list[float]:
        skew = self.args.expert_skew
        return [1.0 / (((e - layer) % self.experts) + 1) ** skew for e in range(self.experts)]

    def forward(self, prompt_tokens: int, completion_tokens: int) -> None:
        """One request served: its prefill pass and its decode passes."""
        passes = [prompt_tokens] + [1] * max(completion_tokens - 1, 0)
        for tokens in passes:
            self.passes += 1
            if self.recording and self.experts > 0:
                self._record_pass(self.passes, tokens)

    def _record_pass(self, pass_id: int, tokens: int) -> None:
        counts = self._zeros()
        for layer in range(self.layers):
            weights = self.weights(layer)
            for token in range(tokens):
                rng = random.Random(f"{pass_id}:{token}:{layer}")
                chosen: list[int] = []
                left = list(range(self.experts))
                for _ in range(self.top_k):
                    pick = rng.choices(left, [weights[e] for e in left])[0]
                    chosen.append(pick)
                    left.remove(pick)
                for expert in chosen:
                    counts[layer][expert] += 1
                    self.truth[layer][expert] += 1
        self.truth_tokens += tokens
        self.truth_passes += 1
        # The all-reduce over the tensor-parallel ranks, each of which routed every token.
        reduced = [[c * self.args.tp_size for c in layer] for layer in counts]
        if self.mode in ("per_pass", "per_token"):
            self.records.append({"forward_pass_id": pass_id, "rank": 0, "counts": reduced})
        elif self.size < 0:
            self.rows.append(reduced)
        elif self.size > 0:
            self.rows[self.index] = reduced
            self.index = (self.index + 1) % self.size

    def dump(self) -> Path:
        """Write the record as SGLang does (torch is imported here: only a dump needs it)."""
        import torch

        folder = Path(os.environ.get(DUMP_DIR_ENV, "/tmp"))
        folder.mkdir(parents=True, exist_ok=True)
        if self.mode in ("per_pass", "per_token"):
            records = [
                {
                    "forward_pass_id": r["forward_pass_id"],
                    "rank": 0,
                    "gatherer_key": "primary",
                    "global_physical_count": torch.tensor(r["counts"], dtype=torch.int32),
                }
                for r in self.records
            ]
            identity = [list(range(self.experts)) for _ in range(self.layers)]
            output: dict[str, Any] = {
                "records": records,
                "last_physical_to_logical_map": torch.tensor(identity),
            }
            path = folder / f"expert_distribution_recorder_{time.time()}_0.pt"
        else:
            counts = torch.tensor(self.rows, dtype=torch.int32)
            if not self.rows:
                counts = torch.zeros((0, self.layers, self.experts), dtype=torch.int32)
            output = {
                "rank": 0,
                "logical_count": counts,
                "average_utilization_rate_over_window": None,
            }
            path = folder / f"expert_distribution_recorder_{time.time()}.pt"
        torch.save(output, str(path))
        log.info("Write expert distribution to %s", path)
        self.reset()
        return path


def text(line: str) -> Response[Any]:
    """A plain-text answer, as SGLang's ``Response(content=...)`` sends it."""
    return Response(line.encode(), status_code=200, media_type="text/plain; charset=utf-8")


def crash() -> None:
    """The recorder is off: SGLang's scheduler raises, sends SIGQUIT to the server process and
    the server goes down without answering. So does the stand-in (killed: no core file)."""
    log.error("Scheduler hit an exception: Please set ServerArgs.expert_distribution_recorder_mode")
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)


def expert_routes(standin: StandIn) -> list[Any]:
    """The route handlers, over ``standin``; registers the recorder's forward hook."""
    recorder = ExpertRecorder(standin.args)
    standin.forward_hooks.append(recorder.forward)

    async def act(request: Request[Any, Any, Any], name: str) -> Response[Any] | None:
        standin.requests.append({"path": request.url.path, "body": None})
        replaced = await standin.before(name)
        if replaced is not None:
            return replaced
        if recorder.mode is None:
            crash()
        return None

    methods: Any = ["GET", "POST"]

    @route("/start_expert_distribution_record", http_method=methods, status_code=200)
    async def start(request: Request[Any, Any, Any]) -> Response[Any]:
        refused = await act(request, "start_expert")
        if refused is not None:
            return refused
        recorder.start()
        return text("Start recording the expert distribution.\n")

    @route("/stop_expert_distribution_record", http_method=methods, status_code=200)
    async def stop(request: Request[Any, Any, Any]) -> Response[Any]:
        refused = await act(request, "stop_expert")
        if refused is not None:
            return refused
        while standin.control.hold_stop:
            await asyncio.sleep(0.02)
        recorder.stop()
        return text("Stop recording the expert distribution.\n")

    @route("/dump_expert_distribution_record", http_method=methods, status_code=200)
    async def dump(request: Request[Any, Any, Any]) -> Response[Any]:
        refused = await act(request, "dump_expert")
        if refused is not None:
            return refused
        await asyncio.to_thread(recorder.dump)
        return text("Dump expert distribution record.\n")

    @get("/_standin/experts")
    async def truth() -> Response[Any]:
        return json_body(
            {
                "recording": recorder.recording,
                "layers": recorder.layers,
                "experts": recorder.experts,
                "top_k": recorder.top_k,
                "tp_size": standin.args.tp_size,
                "tokens": recorder.truth_tokens,
                "passes": recorder.truth_passes,
                "load": recorder.truth,
            }
        )

    return [start, stop, dump, truth]
