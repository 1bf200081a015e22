"""Expert telemetry: ``GET /admin/models/{name}/experts`` on a real ``mvm-chat serve`` against
SGLang stand-ins whose model is a mixture of experts (``tests/sglang_standin_experts.py``), and the
heatmap page at ``/admin/experts``."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from mvm_chat.engines.sglang_experts import ExpertLoad, imbalance, layer_loads, read_dumps
from mvm_chat.engines.torch_dump import DumpFormatError
from mvm_chat.web.heatmap import heatmap
from tests.integration.conftest import ROOT, STANDIN, seen
from tests.support import Server, free_port, wait_http

pytestmark = pytest.mark.slow

LAYERS, EXPERTS, TOP_K, TP = 4, 8, 2, 2


def _spawn_standin(
    workdir: Path, dump_dir: Path, *extra: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A stand-in whose model is a Mixtral-like MoE; wait for it with :func:`wait_http`."""
    port = free_port()
    log = workdir / f"standin-{port}.log"
    args = [
        "--port", str(port), "--served-model-name", "mixtral",
        "--model-path", "mistralai/Mixtral-8x7B-Instruct-v0.1",
        "--architecture", "MixtralForCausalLM", "--model-type", "mixtral",
        "--num-hidden-layers", str(LAYERS), "--num-local-experts", str(EXPERTS),
        "--num-experts-per-tok", str(TOP_K), "--expert-skew", "1.5",
        "--tp-size", str(TP), "--ep-size", str(TP), *extra,
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*STANDIN, *args],
            cwd=ROOT,
            env={**os.environ, "SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR": str(dump_dir)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, f"http://127.0.0.1:{port}", log


class Site:
    """The server, its stand-ins and keys."""

    def __init__(self, server: Server, moe: str, off: str, dense: str, dumps: Path) -> None:
        self.server, self.url, self.moe, self.off, self.dense = server, server.url, moe, off, dense
        self.dumps = dumps
        self.admin = server.key("ops", "admin")
        self.client = server.key("acme")

    def experts(self, name: str, key: str | None = None, **params: Any) -> httpx.Response:
        return httpx.get(
            f"{self.url}/admin/models/{name}/experts",
            params=params,
            headers={"Authorization": f"Bearer {key or self.admin}"},
            timeout=60,
        )

    def chat(self, text: str) -> dict[str, int]:
        response = httpx.post(
            f"{self.url}/v1/chat/completions",
            json={"model": "mixtral", "messages": [{"role": "user", "content": text}]},
            headers={"Authorization": f"Bearer {self.client}", "Cache-Control": "no-cache"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return dict(response.json()["mvm"]["usage"])

    def control(self, url: str, **control: Any) -> None:
        httpx.post(f"{url}/_standin/control", json=control).raise_for_status()

    def truth(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.moe}/_standin/experts").json())

    def wait_recording(self) -> None:
        deadline = time.monotonic() + 30
        while not self.truth()["recording"]:
            assert time.monotonic() < deadline, "the stand-in never started recording"
            time.sleep(0.05)

    def record_held(self, pool: ThreadPoolExecutor, name: str = "mixtral") -> Future[Any]:
        """Start a 1-second recording whose stop the stand-in holds until released."""
        self.control(self.moe, hold_stop=True)
        future = pool.submit(self.experts, name, seconds=1)
        self.wait_recording()
        return future


@pytest.fixture(scope="module")
def site(standin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    workdir = tmp_path_factory.mktemp("experts")
    dumps, elsewhere = workdir / "dumps", workdir / "elsewhere"
    dumps.mkdir()
    elsewhere.mkdir()
    spawned = [
        _spawn_standin(workdir, dumps, "--expert-distribution-recorder-mode", "stat"),
        _spawn_standin(workdir, dumps),  # a MoE model whose server records nothing
    ]
    procs = [proc for proc, _, _ in spawned]
    try:
        for proc, url, log in spawned:
            wait_http(f"{url}/model_info", timeout_s=60, proc=proc, log=log)
        moe, off = (url for _, url, _ in spawned)
        models = [
            ("mixtral", moe, dumps),
            ("mixtral-off", off, dumps),
            ("dense", standin, dumps),
            ("mixtral-nodir", moe, None),
            ("mixtral-elsewhere", moe, elsewhere),
        ]
        config = '[[tiers]]\nname = "moe"\n[routing]\ndefault_tier = "moe"\n'
        for name, url, folder in models:
            config += (
                f'[[models]]\nname = "{name}"\ntier = "moe"\nengine = "sglang"\n'
                f'base_url = "{url}"\nupstream_model = "mixtral"\nmetrics_interval_s = 0.0\n'
            )
            config += f'expert_dump_dir = "{folder}"\n' if folder else ""
        server = Server(workdir / "server", config).start()
        try:
            yield Site(server, moe, off, standin, dumps)
        finally:
            server.stop()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def fresh(site: Site, script: Any) -> Iterator[Site]:
    for url in (site.moe, site.off):
        httpx.post(f"{url}/_standin/reset").raise_for_status()
    yield site
    for url in (site.moe, site.off):
        httpx.post(f"{url}/_standin/reset").raise_for_status()


def test_records_per_layer_expert_load_of_the_chats_served(fresh: Site) -> None:
    site = fresh
    with ThreadPoolExecutor(1) as pool:
        future = site.record_held(pool)
        usages = [site.chat(t) for t in ("Where is my card?", "Hello", "Cancel my order, please")]
        site.control(site.moe, hold_stop=False)
        response = future.result()
    assert response.status_code == 200, response.text
    body = response.json()
    truth = site.truth()
    # SGLang processes the prompt in one pass, then each generated token but the last.
    tokens = sum(u["prompt_tokens"] + u["completion_tokens"] - 1 for u in usages)
    assert truth["tokens"] == tokens and not truth["recording"]

    assert body["model"] == "mixtral" and body["seconds"] == 1
    assert body["recorder_mode"] == "stat" and body["experts"] == EXPERTS
    assert [layer["layer"] for layer in body["layers"]] == list(range(LAYERS))
    loads = [layer["load"] for layer in body["layers"]]
    assert all(len(load) == EXPERTS for load in loads)
    # Counts are summed over the tensor-parallel ranks, each of which routed every token.
    assert loads == [[c * TP for c in layer] for layer in truth["load"]]
    assert all(sum(load) == tokens * TOP_K * TP for load in loads)
    for layer in body["layers"]:
        load = layer["load"]
        assert layer["imbalance"] == pytest.approx(max(load) / (sum(load) / EXPERTS))
    per_layer = [layer["imbalance"] for layer in body["layers"]]
    assert body["imbalance"]["max"] == max(per_layer) > 1
    assert body["imbalance"]["mean"] == pytest.approx(sum(per_layer) / LAYERS)
    assert body["forward_passes"] == truth["passes"] == sum(u["completion_tokens"] for u in usages)
    assert body["buffer_size"] == 1000 and body["buffer_full"] is False
    [name] = body["dump_files"]
    assert (site.dumps / name).is_file()
    steps = [r["path"] for r in httpx.get(f"{site.moe}/_standin/requests").json()]
    assert [p for p in steps if "expert_distribution" in p] == [
        "/start_expert_distribution_record",
        "/stop_expert_distribution_record",
        "/dump_expert_distribution_record",
    ]

    last = site.server.url + "/admin/models/mixtral/experts/last"
    kept = httpx.get(last, headers={"Authorization": f"Bearer {site.admin}"}).json()
    assert kept == body

    heat = _heatmaps(site)
    cells = heat["mixtral"]
    assert len(cells) == LAYERS * EXPERTS
    assert {(c["layer"], c["expert"]): int(c["value"]) for c in cells} == {
        (i, e): loads[i][e] for i in range(LAYERS) for e in range(EXPERTS)
    }
    assert heat["mixtral-off"] == "empty" and heat["dense"] == "empty"


def test_a_second_recording_of_the_same_model_is_a_conflict(fresh: Site) -> None:
    site = fresh
    with ThreadPoolExecutor(1) as pool:
        future = site.record_held(pool)
        try:
            second = site.experts("mixtral", seconds=1)
            also = site.experts("mixtral-nodir", seconds=1)
        finally:
            site.control(site.moe, hold_stop=False)
        assert future.result().status_code == 200
    assert second.status_code == 409 and "under way" in second.json()["detail"]
    assert also.status_code == 422  # another model, refused for its own reason


@pytest.mark.parametrize(
    ("name", "params", "status", "field"),
    [
        ("nope", {"seconds": 1}, 404, ""),
        ("mixtral", {"seconds": 0}, 422, "seconds"),
        ("mixtral", {"seconds": 301}, 422, "seconds"),
        ("mixtral", {"seconds": "soon"}, 422, "seconds"),
        ("dense", {"seconds": 1}, 422, "model"),
        ("mixtral-off", {"seconds": 1}, 422, "model"),
        ("mixtral-nodir", {"seconds": 1}, 422, "model"),
    ],
)
def test_refused_without_recording(
    fresh: Site, name: str, params: dict[str, Any], status: int, field: str
) -> None:
    response = fresh.experts(name, **params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"].startswith(f"{field}: " if field else "no model")
    for url in (fresh.moe, fresh.off, fresh.dense):
        assert not seen(url, "/start_expert_distribution_record")
    if name == "mixtral-off":  # a start would have taken that server down: it is still up
        fresh.control(fresh.off, health_delay_s=0.0)
        assert httpx.get(f"{fresh.off}/health", timeout=10).status_code == 200


def test_the_reason_names_what_to_change(fresh: Site) -> None:
    off = fresh.experts("mixtral-off", seconds=1).json()["detail"]
    assert "MixtralForCausalLM" in off and "--expert-distribution-recorder-mode stat" in off
    dense = fresh.experts("dense", seconds=1).json()["detail"]
    assert "not a mixture of experts" in dense
    nodir = fresh.experts("mixtral-nodir", seconds=1).json()["detail"]
    assert "expert_dump_dir" in nodir and "SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR" in nodir


def test_admin_only(fresh: Site) -> None:
    assert fresh.experts("mixtral", key=fresh.client, seconds=1).status_code == 403
    anonymous = httpx.get(f"{fresh.url}/admin/models/mixtral/experts", params={"seconds": 1})
    assert anonymous.status_code == 401
    assert httpx.get(f"{fresh.url}/admin/experts").status_code == 303  # the page: sign in first
    assert not seen(fresh.moe, "/start_expert_distribution_record")


@pytest.mark.parametrize(
    ("fault", "step", "stopped"),
    [
        ({"model_info": "status:500"}, "server_info", False),
        ({"start_expert": "status:500"}, "start", False),
        ({"stop_expert": "status:500"}, "stop", True),
        ({"dump_expert": "status:503"}, "dump", True),
    ],
)
def test_upstream_failures_are_502_naming_the_step(
    fresh: Site, fault: dict[str, str], step: str, stopped: bool
) -> None:
    fresh.control(fresh.moe, faults=fault)
    response = fresh.experts("mixtral", seconds=1)
    assert response.status_code == 502, response.text
    assert f"step {step!r} failed" in response.json()["detail"]
    assert bool(seen(fresh.moe, "/stop_expert_distribution_record")) is stopped


def test_a_dump_dir_sglang_does_not_write_to_is_a_502(fresh: Site) -> None:
    response = fresh.experts("mixtral-elsewhere", seconds=1)
    assert response.status_code == 502
    detail = response.json()["detail"]
    assert "step 'dump' failed" in detail and "SGLANG_EXPERT_DISTRIBUTION_RECORDER_DIR" in detail


def test_read_dumps_sums_ranks_and_passes_without_torch(tmp_path: Path) -> None:
    import torch  # only to write the files, as SGLang does

    passes = torch.zeros((5, 2, 3), dtype=torch.int32)
    passes[0] = torch.tensor([[1, 2, 3], [0, 0, 6]])
    passes[3] = torch.tensor([[1, 0, 0], [1, 0, 0]])
    torch.save({"rank": 0, "logical_count": passes, "x": None}, str(tmp_path / "a.pt"))
    torch.save({"logical_count": torch.tensor([[1, 1, 1], [2, 2, 2]])}, str(tmp_path / "b.pt"))
    counts, used = read_dumps([tmp_path / "a.pt", tmp_path / "b.pt"])
    assert counts == [[3, 3, 4], [3, 2, 8]] and used == 2
    transposed = passes.transpose(1, 2)  # not contiguous: read through its strides
    torch.save({"logical_count": transposed}, str(tmp_path / "t.pt"))
    assert read_dumps([tmp_path / "t.pt"]) == (transposed.sum(0).tolist(), 2)
    torch.save({"logical_count": passes, "path": Path("x")}, str(tmp_path / "evil.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    for bad in ("evil.pt", "junk.pt"):
        with pytest.raises(DumpFormatError):
            read_dumps([tmp_path / bad])
    assert imbalance([0, 0, 0]) is None and imbalance([]) is None
    assert imbalance([2, 0, 1, 1]) == 2.0


def test_heatmap_draws_one_cell_per_layer_and_expert() -> None:
    result = ExpertLoad(
        "m", 5, layer_loads([[4, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]), datetime.now(UTC)
    )
    drawn = heatmap(result)
    assert len(drawn.cells) == 12 and {c.value for c in drawn.cells} == {"4", "0", "1"}
    darkest = next(c for c in drawn.cells if c.value == "4")
    assert darkest.color == "#2f6fdf" and drawn.cells[1].color == "#f1f3f5"
    assert [r.imbalance for r in drawn.rows] == ["4.000", "1.000", "-"]
    assert result.summary() == {"mean": 2.5, "max": 4.0}


class _Cells(HTMLParser):
    """Each heatmap's cells (``data-layer`` / ``data-expert`` / ``data-value``) by model, or
    ``"empty"`` for a model not recorded yet."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, Any] = {}
        self.current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("data-chart") == "experts" and a.get("data-model"):
            model = str(a["data-model"])
            if a.get("data-empty") == "true":
                self.charts[model] = "empty"
            else:
                self.charts[model], self.current = [], model
        elif tag == "rect" and self.current and "data-expert" in a:
            cell = {"layer": int(a["data-layer"] or 0), "expert": int(a["data-expert"] or 0)}
            self.charts[self.current].append({**cell, "value": a["data-value"]})

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.current = None


def _heatmaps(site: Site) -> dict[str, Any]:
    with httpx.Client(base_url=site.url, timeout=30) as browser:
        signed_in = browser.post("/admin/login", data={"key": site.admin})
        assert signed_in.status_code == 303
        page = browser.get("/admin/experts")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parser = _Cells()
    parser.feed(page.text)
    return parser.charts


def test_the_page_records_and_shows_refusals(fresh: Site) -> None:
    with httpx.Client(base_url=fresh.url, timeout=60) as browser:
        assert browser.post("/admin/login", data={"key": fresh.admin}).status_code == 303
        refused = browser.post("/admin/experts", data={"model": "dense", "seconds": "1"})
        assert refused.status_code == 422 and "not a mixture of experts" in refused.text
        assert 'id="experts-error"' in refused.text
        recorded = browser.post("/admin/experts", data={"model": "mixtral", "seconds": "1"})
        assert recorded.status_code == 303 and recorded.headers["location"] == "/admin/experts"
    assert len(seen(fresh.moe, "/dump_expert_distribution_record")) == 1
    cells = _heatmaps(fresh)["mixtral"]
    assert len(cells) == LAYERS * EXPERTS  # nothing was served while it recorded: all zero
    assert {c["value"] for c in cells} == {"0"}
