"""The geometry of the dashboard's SVG charts, computed on the server.

Each chart is a plain value that a template draws; every data point keeps the exact value it
stands for (``value``, a string such as a decimal money amount) apart from its drawn size, so
that the page shows and tests read the numbers, not the pixels. Floats here are pixels only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from mvm_chat.ledger.pricing import show

WIDTH = 640.0
HEIGHT = 200.0
PAD_LEFT = 56.0
PAD_RIGHT = 12.0
PAD_TOP = 12.0
PAD_BOTTOM = 28.0
PALETTE = ("#2f6fdf", "#1aa179", "#e0a100", "#d9480f", "#7048e8", "#0c8599", "#868e96")


@dataclass(frozen=True, slots=True)
class Mark:
    """One data point as drawn: a bar (``width`` > 0) or a point (``width`` 0)."""

    key: str
    value: str
    label: str
    x: float
    y: float
    width: float
    height: float
    color: str = PALETTE[0]
    text: str = ""
    """The value as the page shows it next to the mark (bar lists)."""


@dataclass(frozen=True, slots=True)
class Tick:
    """An axis label at a position (x for the time axis, y for the value axis)."""

    at: float
    text: str


@dataclass(frozen=True, slots=True)
class TimeChart:
    """Values per day over a date range: bars for ``bars``, a line through ``points``."""

    width: float
    height: float
    bars: list[Mark]
    points: list[Mark]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    zero_y: float

    left: float = PAD_LEFT
    """Where the plot starts (the value axis' labels end just before it)."""
    right: float = WIDTH - PAD_RIGHT

    @property
    def line(self) -> str:
        """The ``points`` attribute of the polyline through the points."""
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True, slots=True)
class Series:
    """A day series: ``(day, value shown, value for drawing)`` for the days with data."""

    name: str
    values: Sequence[tuple[date, str, Decimal]]
    label: str


def _nice_max(value: Decimal) -> Decimal:
    """A round number at or above ``value`` for the top of an axis."""
    if value <= 0:
        return Decimal(1)
    exponent = value.adjusted()
    step = Decimal(10) ** exponent
    for factor in (1, 2, 2.5, 5, 10):
        top = step * Decimal(str(factor))
        if top >= value:
            return top
    return step * 10


def _axis_label(value: Decimal, money: bool) -> str:
    text = f"{value.normalize():f}"
    return f"${text}" if money else text


def time_chart(
    start: date,
    days: int,
    bars: Series | None,
    points: Series | None,
    money: bool = True,
) -> TimeChart:
    """Bars and/or a line over ``days`` days from ``start``; negative values go below zero."""
    plot_w = WIDTH - PAD_LEFT - PAD_RIGHT
    plot_h = HEIGHT - PAD_TOP - PAD_BOTTOM
    slot = plot_w / max(days, 1)
    drawn = [v for s in (bars, points) if s for _, _, v in s.values]
    top = _nice_max(max([*drawn, Decimal(0)]))
    bottom = -_nice_max(-min(drawn)) if drawn and min(drawn) < 0 else Decimal(0)
    span = float(top - bottom)

    def y_of(value: Decimal) -> float:
        return PAD_TOP + plot_h * float(top - value) / span

    zero_y = y_of(Decimal(0))

    def x_of(day: date) -> float:
        return PAD_LEFT + slot * (day - start).days

    bar_marks = []
    for day, shown, value in bars.values if bars else ():
        y = y_of(value)
        bar_marks.append(
            Mark(
                key=day.isoformat(),
                value=shown,
                label=f"{day.isoformat()}: {bars.label if bars else ''} {shown}",
                x=x_of(day) + slot * 0.15,
                y=min(y, zero_y),
                width=slot * 0.7,
                height=max(abs(zero_y - y), 1.0),
            )
        )
    point_marks = [
        Mark(
            key=day.isoformat(),
            value=shown,
            label=f"{day.isoformat()}: {points.label if points else ''} {shown}",
            x=x_of(day) + slot / 2,
            y=y_of(value),
            width=0.0,
            height=0.0,
            color=PALETTE[3],
        )
        for day, shown, value in (points.values if points else ())
    ]
    x_ticks = [
        Tick(
            x_of(start + timedelta(days=i)) + slot / 2,
            (start + timedelta(days=i)).strftime("%m-%d"),
        )
        for i in range(0, days, max(days // 6, 1))
    ]
    y_ticks = [
        Tick(y_of(v), _axis_label(v, money))
        for v in sorted({bottom, Decimal(0), (top + bottom) / 2, top})
    ]
    return TimeChart(WIDTH, HEIGHT, bar_marks, point_marks, x_ticks, y_ticks, zero_y)


@dataclass(frozen=True, slots=True)
class BarList:
    """Labelled horizontal bars, longest for the largest value."""

    width: float
    height: float
    label_width: float
    bars: list[Mark]


ROW = 24.0


def bar_list(rows: Sequence[tuple[str, str, Decimal]], label_width: float = 180.0) -> BarList:
    """Horizontal bars for ``(key, value shown, value for drawing)`` rows, in the given order."""
    top = max([v for _, _, v in rows] + [Decimal(0)])
    room = WIDTH - label_width - 110.0
    bars = [
        Mark(
            key=key,
            value=shown,
            label=f"{key}: {shown}",
            x=label_width,
            y=i * ROW + 4,
            width=max(room * float(value / top) if top > 0 else 0.0, 1.0),
            height=ROW - 8,
            color=PALETTE[i % len(PALETTE)],
            text=f"${show(value)}",
        )
        for i, (key, shown, value) in enumerate(rows)
    ]
    return BarList(WIDTH, max(len(rows), 1) * ROW, label_width, bars)


def stacked_bar(rows: Sequence[tuple[str, str, Decimal]]) -> list[Mark]:
    """One 100% bar split into a segment per row, in the given order (the tier mix)."""
    total = sum((v for _, _, v in rows), Decimal(0))
    marks, x = [], 0.0
    for i, (key, shown, value) in enumerate(rows):
        share = float(value / total) if total > 0 else 0.0
        marks.append(
            Mark(
                key=key,
                value=shown,
                label=f"{key}: {shown} ({share:.1%})",
                x=x,
                y=0.0,
                width=WIDTH * share,
                height=28.0,
                color=PALETTE[i % len(PALETTE)],
            )
        )
        x += WIDTH * share
    return marks


@dataclass(frozen=True, slots=True)
class Gauge:
    """A budget gauge: spent of the monthly budget, the bar filled up to 100%; amounts as
    ``GET /admin/budgets`` shows them."""

    key: str
    spent: str
    budget: str
    reserved: str
    text: str
    ratio: str
    """Spent over budget, 4 decimal places (``"1.2500"`` when over)."""
    fill: float
    level: str
    """``ok``, ``warn`` (80% or more) or ``over`` (100% or more)."""


GAUGE_WIDTH = 300.0


def gauge(key: str, spent: Decimal, budget: Decimal, reserved: Decimal) -> Gauge:
    """The gauge of one tenant's monthly budget."""
    ratio = spent / budget if budget > 0 else (Decimal(1) if spent > 0 else Decimal(0))
    level = "over" if ratio >= 1 else "warn" if ratio >= Decimal("0.8") else "ok"
    return Gauge(
        key=key,
        spent=show(spent),
        budget=show(budget),
        reserved=show(reserved),
        text=f"${show(spent)} of ${show(budget)}",
        ratio=str(ratio.quantize(Decimal("0.0001"))),
        fill=GAUGE_WIDTH * min(float(ratio), 1.0),
        level=level,
    )
