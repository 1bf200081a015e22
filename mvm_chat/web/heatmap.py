"""The geometry of the expert-load heatmap: one cell per (layer, expert), shaded by its share of
the busiest cell, each keeping its exact count apart from its colour (as in ``charts.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from mvm_chat.engines.sglang_experts import ExpertLoad

LABEL_WIDTH = 44.0
IMBALANCE_WIDTH = 64.0
HEADER = 18.0
MAX_CELL = 36.0
MIN_CELL = 4.0
ROW = 14.0
PLOT_WIDTH = 640.0 - LABEL_WIDTH - IMBALANCE_WIDTH
LOW = (241, 243, 245)
HIGH = (47, 111, 223)


@dataclass(frozen=True, slots=True)
class Cell:
    """One expert of one layer: ``value`` is its selection count."""

    layer: int
    expert: int
    value: str
    x: float
    y: float
    width: float
    height: float
    color: str
    label: str


@dataclass(frozen=True, slots=True)
class RowLabel:
    """A layer's label on the left and its imbalance on the right."""

    layer: int
    y: float
    imbalance: str
    """``max / mean`` to 3 places, or ``-`` when the layer routed nothing."""


@dataclass(frozen=True, slots=True)
class Heatmap:
    """A model's last recording, drawn as a grid of layers (rows) by experts (columns)."""

    model: str
    width: float
    height: float
    cell_width: float
    cells: list[Cell]
    rows: list[RowLabel]
    columns: list[tuple[int, float]]
    """Expert numbers shown above the grid, with their x (every one when they fit)."""
    imbalance_x: float


def shade(share: float) -> str:
    """The colour of a cell holding ``share`` (0 to 1) of the busiest cell's load."""
    share = min(max(share, 0.0), 1.0)
    r, g, b = (round(lo + (hi - lo) * share) for lo, hi in zip(LOW, HIGH, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(result: ExpertLoad) -> Heatmap:
    """The heatmap of one recording."""
    experts = max(result.experts, 1)
    cell = max(min(PLOT_WIDTH / experts, MAX_CELL), MIN_CELL)
    peak = result.peak
    cells: list[Cell] = []
    rows: list[RowLabel] = []
    for layer in result.layers:
        y = HEADER + layer.layer * ROW
        shown = "-" if layer.imbalance is None else f"{layer.imbalance:.3f}"
        rows.append(RowLabel(layer.layer, y, shown))
        for expert, count in enumerate(layer.load):
            cells.append(
                Cell(
                    layer=layer.layer,
                    expert=expert,
                    value=str(count),
                    x=LABEL_WIDTH + expert * cell,
                    y=y,
                    width=cell,
                    height=ROW,
                    color=shade(count / peak if peak else 0.0),
                    label=f"layer {layer.layer}, expert {expert}: {count}",
                )
            )
    step = max(1, round(24 / cell))
    columns = [(e, LABEL_WIDTH + (e + 0.5) * cell) for e in range(0, experts, step)]
    grid_right = LABEL_WIDTH + experts * cell
    return Heatmap(
        model=result.model,
        width=grid_right + IMBALANCE_WIDTH,
        height=HEADER + max(len(result.layers), 1) * ROW + 4,
        cell_width=cell,
        cells=cells,
        rows=rows,
        columns=columns,
        imbalance_x=grid_right + 8,
    )
