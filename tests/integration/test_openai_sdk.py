"""The official openai SDK against a real server running SmolLM2 through llama.cpp."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support import Server


@pytest.fixture
def sdk(sqlite_server: Server, client_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sqlite_server.url}/v1", api_key=client_key, max_retries=0)


def test_completion_is_answered_by_smollm2(sdk: openai.OpenAI) -> None:
    resp = sdk.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Name a colour of the sky."}]
    )
    assert resp.choices[0].message.content
    assert resp.choices[0].message.content.strip()
    mvm = resp.model_extra["mvm"]
    assert mvm["model"] == "smollm2-135m" == resp.model
    assert mvm["tier"] == "local"
    assert mvm["cache"] in ("miss", "hit")
    assert mvm["usage"]["prompt_tokens"] == resp.usage.prompt_tokens > 0
    assert mvm["usage"]["completion_tokens"] == resp.usage.completion_tokens > 0
    assert len(mvm["conversation_id"]) == 32 and len(mvm["message_id"]) == 32


def test_streaming_completion(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Count from one to five."}],
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert len(chunks) > 3, "tokens arrive as separate chunks"
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    mvm = last.model_extra["mvm"]
    assert mvm["model"] == "smollm2-135m" and mvm["tier"] == "local"
    assert mvm["usage"]["completion_tokens"] > 0


def test_conversation_continues_by_metadata_and_header(
    sdk: openai.OpenAI, sqlite_server: Server, client_key: str
) -> None:
    first = sdk.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "My name is Ada."}]
    )
    conversation_id = first.model_extra["mvm"]["conversation_id"]
    second = sdk.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "What is my name?"}],
        extra_body={"metadata": {"conversation_id": conversation_id}},
    )
    assert second.model_extra["mvm"]["conversation_id"] == conversation_id
    third = sdk.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Thanks!"}],
        extra_headers={"X-Conversation-Id": conversation_id},
    )
    assert third.model_extra["mvm"]["conversation_id"] == conversation_id

    stored = httpx.get(
        f"{sqlite_server.url}/v1/conversations/{conversation_id}",
        headers={"Authorization": f"Bearer {client_key}"},
    ).json()
    roles = [m["role"] for m in stored["messages"]]
    assert roles == ["user", "assistant"] * 3
    assert stored["messages"][0]["content"] == "My name is Ada."
    assert stored["messages"][2]["content"] == "What is my name?"
    assert stored["messages"][3]["content"] == second.choices[0].message.content
    assert stored["messages"][3]["model"] == "smollm2-135m"


def test_models_lists_the_catalog(sdk: openai.OpenAI) -> None:
    ids = [m.id for m in sdk.models.list()]
    assert ids == ["auto", "smollm2-135m"]


def test_unknown_model_is_404(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(
            model="gpt-nonexistent", messages=[{"role": "user", "content": "hi"}]
        )
    assert "gpt-nonexistent" in str(info.value)


def test_wrong_key_is_401(sqlite_server: Server) -> None:
    bad = openai.OpenAI(base_url=f"{sqlite_server.url}/v1", api_key="mvm_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
