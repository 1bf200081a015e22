"""Choosing the model for a turn (the full ladder comes with tier routing)."""

from __future__ import annotations

from dataclasses import dataclass

from mvm_chat.errors import NotFound
from mvm_chat.settings import ModelSettings, Settings

AUTO = "auto"


@dataclass(frozen=True, slots=True)
class Route:
    """The model chosen for a turn, its tier and why."""

    model: ModelSettings
    reason: str

    @property
    def tier(self) -> str:
        return self.model.tier


def choose(settings: Settings, requested: str) -> Route:
    """A named model as asked, or for ``"auto"`` the cheapest model from the default tier up."""
    if requested != AUTO:
        model = settings.model(requested)
        if model is None:
            raise NotFound(f"model {requested!r} is not in the catalog (see GET /v1/models)")
        return Route(model, "requested model")
    tiers = settings.tier_names
    for tier in tiers[tiers.index(settings.routing.default_tier) :]:
        for model in settings.models:
            if model.tier == tier:
                return Route(
                    model,
                    "default tier"
                    if tier == settings.routing.default_tier
                    else "no model on the default tier",
                )
    raise NotFound("no model is configured on the default tier or above it")
