"""Answer-based escalation: token log-probabilities and a constrained self-check."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mvm_chat import Escalation, Turn
from mvm_chat.default_plugins.answer_checks import LogprobCheck, SelfCheck
from mvm_chat.engines.llamacpp import LlamaCppEngine
from mvm_chat.settings import ModelSettings, Settings, TierSettings

SMALL = ModelSettings(name="small", tier="local", engine="llamacpp", path="builtin:smollm2-135m")
BIG = ModelSettings(name="big", tier="api", engine="openai", base_url="http://x/v1")
SETTINGS = Settings(
    tiers=[TierSettings(name="local"), TierSettings(name="api")], models=[SMALL, BIG]
)


def _turn(tier: str, logprobs: list[float]) -> Turn:
    return Turn(
        text="When will my card arrive?",
        conversation_id="c",
        tenant="t",
        metadata={"tier": tier, "answer_logprobs": logprobs},
    )


def test_logprob_check_mean_and_minimum() -> None:
    check = LogprobCheck(SETTINGS, min_mean=-1.0, min_token=-5.0)
    assert check.after_generation(_turn("local", [-0.1, -0.5]), "x", None) is None
    low_mean = check.after_generation(_turn("local", [-2.0, -1.5]), "x", None)
    assert low_mean is not None and low_mean.target == "api"
    assert low_mean.reason == "low answer confidence (mean token logprob)"
    one_bad = check.after_generation(_turn("local", [-0.01] * 9 + [-6.0]), "x", None)
    assert one_bad is not None and one_bad.reason == "low answer confidence (a token's logprob)"
    assert check.after_generation(_turn("api", [-9.0]), "x", None) is None, "top tier: accept"
    assert check.after_generation(_turn("local", []), "x", None) is None


@pytest.fixture(scope="module")
async def small() -> AsyncIterator[LlamaCppEngine]:
    engine = LlamaCppEngine(SMALL)
    await engine.start()
    yield engine
    await engine.close()


async def test_self_check_asks_the_small_model(small: LlamaCppEngine) -> None:
    turn = _turn("local", [])
    answer = "Cards arrive within 5 business days."
    never = await SelfCheck(SETTINGS, small, min_yes=0.0).after_generation(turn, answer, None)
    assert never is None
    always = await SelfCheck(SETTINGS, small, min_yes=1.01).after_generation(turn, answer, None)
    assert isinstance(always, Escalation) and always.target == "api"
    assert always.reason == "self-check: the answer may not answer the question"
