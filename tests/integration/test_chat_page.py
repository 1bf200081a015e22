"""The chat page at ``GET /`` in headless Chromium: paste a key, chat, see the reply's costs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser import Browser
from tests.support import Server

pytestmark = pytest.mark.slow

# Counts the changes to assistant bubbles' text made while the reply was still streaming.
WATCH_STREAMING = """
window.__streamed = 0;
new MutationObserver((records) => {
  for (const r of records) {
    const li = r.target.closest && r.target.closest("li.assistant");
    if (li && !li.dataset.done && r.target.classList.contains("text")) window.__streamed++;
  }
}).observe(document.getElementById("messages"), {childList: true, subtree: true,
                                                 characterData: true});
true
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as running:
        yield running


def _fill(browser: Browser, element_id: str, value: str) -> None:
    browser.evaluate(
        f"document.getElementById({json.dumps(element_id)}).value = {json.dumps(value)}"
    )


def _submit(browser: Browser, form_id: str) -> None:
    browser.evaluate(f"document.getElementById({json.dumps(form_id)}).requestSubmit()")


def _send(browser: Browser, text: str) -> dict[str, Any]:
    """Send ``text`` and wait for its streamed reply to finish; returns the reply bubble."""
    before = browser.evaluate("document.querySelectorAll('li.assistant[data-done]').length")
    _fill(browser, "message", text)
    _submit(browser, "send-form")
    browser.wait_for(
        f"document.querySelectorAll('li.assistant[data-done]').length > {before}", timeout=120
    )
    reply: dict[str, Any] = browser.evaluate(
        """(() => {
          const li = [...document.querySelectorAll('li.assistant[data-done]')].at(-1);
          const field = (name) => li.querySelector(`.meta [data-field="${name}"]`).textContent;
          return {text: li.querySelector('.text').textContent, id: li.dataset.messageId,
                  model: li.dataset.model, tier: li.dataset.tier, cost: li.dataset.cost,
                  savings: li.dataset.savings, meta: li.querySelector('.meta').textContent,
                  model_text: field('model'), tier_text: field('tier'),
                  cost_text: field('cost_usd'), savings_text: field('savings_usd')};
        })()"""
    )
    return reply


def test_chat_through_the_page(sqlite_server: Server, client_key: str, browser: Browser) -> None:
    browser.navigate(f"{sqlite_server.url}/")
    assert browser.evaluate("document.title") == "mvm_chat: chat"
    _fill(browser, "api-key", client_key)
    _submit(browser, "key-form")
    assert browser.evaluate("localStorage.getItem('mvm_chat.key')") == client_key
    browser.evaluate(WATCH_STREAMING)

    reply = _send(browser, "Hello! What can you do?")
    conversation_id = browser.evaluate("document.getElementById('chat').dataset.conversationId")
    assert conversation_id
    assert reply["text"].strip() and reply["id"]
    assert reply["model"] == reply["model_text"] == "smollm2-135m"
    assert reply["tier"] == "local" and reply["tier_text"] == "tier local"
    assert reply["cost_text"] == f"cost ${reply['cost']}" and reply["cost"] == "0.000000"
    assert reply["savings_text"] == f"saved ${reply['savings']}"
    # the reply grew token by token before the done frame closed it
    assert browser.evaluate("window.__streamed") >= 2

    # a second message continues the same conversation over the same socket
    second = _send(browser, "Thanks.")
    assert browser.evaluate("document.getElementById('chat').dataset.conversationId") == (
        conversation_id
    )

    detail = httpx.get(
        f"{sqlite_server.url}/v1/conversations/{conversation_id}",
        headers={"Authorization": f"Bearer {client_key}"},
    ).json()
    messages = [(m["role"], m["content"]) for m in detail["messages"]]
    assert messages == [
        ("user", "Hello! What can you do?"),
        ("assistant", reply["text"]),
        ("user", "Thanks."),
        ("assistant", second["text"]),
    ]
    assert [m["id"] for m in detail["messages"] if m["role"] == "assistant"] == [
        reply["id"],
        second["id"],
    ]
    assert detail["messages"][1]["model"] == "smollm2-135m"
    # no script error, no blocked resource, no CSP violation on the way
    assert browser.errors == []

    # the key survives a reload (localStorage), and "Forget key" removes it
    browser.navigate(f"{sqlite_server.url}/")
    assert browser.evaluate("document.getElementById('api-key').value") == client_key
    browser.evaluate("document.getElementById('forget-key').click()")
    assert browser.evaluate("localStorage.getItem('mvm_chat.key')") is None


def test_a_bad_key_is_reported_on_the_page(sqlite_server: Server, browser: Browser) -> None:
    browser.navigate(f"{sqlite_server.url}/")
    _fill(browser, "api-key", "mvm_not-a-real-key")
    _submit(browser, "key-form")
    _fill(browser, "message", "Hello?")
    _submit(browser, "send-form")
    status = browser.wait_for(
        "document.getElementById('status').className === 'error'"
        " && document.getElementById('status').textContent"
    )
    assert "invalid key" in status
    assert browser.evaluate("document.querySelectorAll('#messages li').length") == 0
