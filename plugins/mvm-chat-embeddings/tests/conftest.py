"""Fixtures: a small labelled CSV, and a model trained on it once per session."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mvm_chat_embeddings.encoder import Encoder, shared_encoder
from mvm_chat_embeddings.model import LoadedModel, load_or_train

INTENTS = {
    "card_arrival": [
        "Where is my new card?",
        "My card has not arrived yet",
        "When will my card be delivered?",
        "How long does the card take to arrive?",
        "I'm still waiting for my card",
        "Has my card been sent out?",
        "The card I ordered never came",
        "Can I track my card delivery?",
    ],
    "exchange_rate": [
        "What is the exchange rate today?",
        "How much is a dollar in euros?",
        "What rate do you use to convert currency?",
        "Is your currency conversion rate fair?",
        "Tell me the euro to pound rate",
        "How are exchange rates calculated?",
        "What exchange rate will I get abroad?",
        "Current rate for converting yen",
    ],
    "lost_card": [
        "I lost my card",
        "My card was stolen",
        "I can't find my card anywhere",
        "Someone took my wallet with my card in it",
        "Block my card, it's missing",
        "I think I left my card at the shop",
        "My bank card is gone",
        "Report a stolen card",
    ],
    "top_up": [
        "How do I add money to my account?",
        "Top up my balance",
        "Can I top up with a bank transfer?",
        "My top-up failed",
        "Add funds with my credit card",
        "How long does a top up take?",
        "Why didn't my top up go through?",
        "Put twenty pounds on my account",
    ],
}

PARAPHRASES = [
    ("my card still hasn't shown up in the post", "card_arrival"),
    ("what's the rate for dollars to euros", "exchange_rate"),
    ("my card got stolen yesterday", "lost_card"),
    ("I want to add money to my balance", "top_up"),
]

FAR_AWAY = ["What is the capital of France?", "Play some jazz music"]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Write ``(text, label)`` rows under a ``text,label`` header."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def intent_rows() -> list[tuple[str, str]]:
    return [(text, label) for label, texts in INTENTS.items() for text in texts]


@pytest.fixture(scope="session")
def train_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "train.csv", intent_rows())


@pytest.fixture(scope="session")
def encoder() -> Encoder:
    return shared_encoder()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def trained(train_csv: Path, cache_dir: Path, encoder: Encoder) -> LoadedModel:
    """The model of ``train_csv``, trained once for the session (saved in ``cache_dir``)."""
    return load_or_train(train_csv, cache_dir, encoder)
