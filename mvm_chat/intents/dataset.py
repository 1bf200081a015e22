"""Labelled intent data: CSV files with a ``text`` column and a ``label`` (or ``category``) column.

Labels ``oos`` and ``out_of_scope`` (any case) both mean "none of the intents" and are read as
:data:`OUT_OF_SCOPE`. Every problem with a file is a :class:`~mvm_chat.errors.ConfigError` whose
message names the file and the line.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mvm_chat.errors import ConfigError

OUT_OF_SCOPE = "out_of_scope"
"""The label of a message that matches none of the known intents."""

_OOS_ALIASES = frozenset({"oos", "out_of_scope"})
_LABEL_COLUMNS = ("label", "category")


@dataclass(frozen=True, slots=True)
class LabelledText:
    """One row of a labelled CSV: the message, its label and the line it came from."""

    text: str
    label: str
    line: int

    @property
    def in_scope(self) -> bool:
        """False for rows labelled out of scope."""
        return self.label != OUT_OF_SCOPE


def normalise_label(label: str) -> str:
    """The label stripped, with the out-of-scope spellings mapped to :data:`OUT_OF_SCOPE`."""
    label = label.strip()
    return OUT_OF_SCOPE if label.lower() in _OOS_ALIASES else label


def _error(path: Path, line: int, problem: str) -> ConfigError:
    return ConfigError(f"{path}:{line}", problem)


def _columns(path: Path, header: Sequence[str] | None) -> tuple[str, str]:
    if not header:
        raise _error(path, 1, "the file is empty (expected a header with text and label)")
    names = {name.strip().lower(): name for name in header}
    if "text" not in names:
        raise _error(path, 1, f"missing column 'text' (header: {', '.join(header)})")
    for wanted in _LABEL_COLUMNS:
        if wanted in names:
            return names["text"], names[wanted]
    raise _error(path, 1, f"missing column 'label' or 'category' (header: {', '.join(header)})")


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise _error(path, line, f"not UTF-8 text ({exc.reason})") from None


def read_labelled_csv(path: str | os.PathLike[str]) -> list[LabelledText]:
    """Every row of a labelled CSV file; a malformed file raises ConfigError (file and line)."""
    path = Path(path)
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""))
    rows: list[LabelledText] = []
    try:
        text_column, label_column = _columns(path, reader.fieldnames)
        for record in reader:
            text = (record.get(text_column) or "").strip()
            label = normalise_label(record.get(label_column) or "")
            if not text:
                raise _error(path, reader.line_num, "the row has an empty text")
            if not label:
                raise _error(path, reader.line_num, "the row has an empty label")
            rows.append(LabelledText(text, label, reader.line_num))
    except csv.Error as exc:
        raise _error(path, reader.line_num, f"not a valid CSV row: {exc}") from None
    if not rows:
        raise _error(path, 2, "the file has a header but no rows")
    return rows


def check_training_rows(path: str | os.PathLike[str], rows: Sequence[LabelledText]) -> None:
    """Refuse training data a classifier cannot learn from.

    Each in-scope label needs at least two examples, and there must be at least two in-scope
    labels; out-of-scope rows are not a label to learn.
    """
    counts = Counter(row.label for row in rows if row.in_scope)
    for row in rows:
        if row.in_scope and counts[row.label] == 1:
            raise _error(
                Path(path),
                row.line,
                f"label {row.label!r} has only one example (a label needs at least two)",
            )
    if len(counts) < 2:
        last = rows[-1].line if rows else 1
        raise _error(
            Path(path), last, f"found {len(counts)} in-scope label(s); at least two are needed"
        )


def read_training_csv(path: str | os.PathLike[str]) -> list[LabelledText]:
    """A labelled CSV checked for training (see :func:`check_training_rows`)."""
    rows = read_labelled_csv(path)
    check_training_rows(path, rows)
    return rows
