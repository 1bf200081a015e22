"""The sglang engine's parts that need no server: metrics parsing, the choice regex, config."""

from __future__ import annotations

import re

import pytest

from mvm_chat.engines.sglang import SglangEngine, choice_regex
from mvm_chat.engines.sglang_metrics import SglangLoad, parse_metrics
from mvm_chat.errors import ConfigError
from mvm_chat.settings import ModelSettings
from tests.sglang_standin_text import metrics_text

GAUGES = {
    "sglang:num_running_reqs": 5.0,
    "sglang:num_queue_reqs": 3.0,
    "sglang:token_usage": 0.6,
    "sglang:gen_throughput": 90.0,
}


def test_metrics_of_one_scheduler() -> None:
    text = metrics_text("m", GAUGES, {"sglang:prompt_tokens_total": 12.0}, dp_size=1)
    assert parse_metrics(text) == GAUGES


def test_metrics_of_data_parallel_ranks_add_up() -> None:
    text = metrics_text("m", GAUGES, {}, dp_size=2)
    assert 'dp_rank="1"' in text
    found = parse_metrics(text)
    assert found["sglang:num_running_reqs"] == 5.0 and found["sglang:num_queue_reqs"] == 3.0
    assert found["sglang:gen_throughput"] == 90.0
    assert found["sglang:token_usage"] == 0.6, "the busiest rank's share, not a sum"


def test_metrics_that_are_not_prometheus_text() -> None:
    with pytest.raises(ValueError):
        parse_metrics("<html>502 Bad Gateway</html>")
    assert parse_metrics("# nothing here\n") == {}


def test_queue_depth_has_our_own_calls_as_its_floor() -> None:
    assert SglangLoad(num_queue_reqs=2, num_running_reqs=3, inflight=1).queue_depth == 5
    assert SglangLoad(inflight=4).queue_depth == 4


def test_choice_regex_matches_exactly_the_choices() -> None:
    choices = ("yes", "no", "a.b", "top-up (card)?", "x|y", "back\\slash")
    pattern = choice_regex(choices)
    for choice in choices:
        assert re.fullmatch(pattern, choice)
    for other in ("axb", "x", "top-up card", "yes no", ""):
        assert re.fullmatch(pattern, other) is None


def test_base_url_is_the_server_root() -> None:
    for url in ("http://gpu:30000", "http://gpu:30000/", "http://gpu:30000/v1"):
        engine = SglangEngine(ModelSettings(name="m", tier="gpu", engine="sglang", base_url=url))
        assert engine.root_url == "http://gpu:30000"
        assert engine.config.base_url == "http://gpu:30000/v1"
    with pytest.raises(ConfigError) as info:
        SglangEngine(ModelSettings(name="m", tier="gpu", engine="sglang"))
    assert info.value.key == "models.base_url"
