"""Finding and reading the files a knowledge base is built from."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SUFFIXES = (".md", ".markdown", ".txt")


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file left out of the knowledge base, and why."""

    path: str
    reason: str


@dataclass(slots=True)
class FoundFiles:
    """The files to ingest, in order, and the arguments that named nothing to ingest."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SourceText:
    """A file's text and the SHA-256 of its bytes."""

    text: str
    content_hash: str


class UnreadableFile(Exception):
    """A file that cannot be ingested; the message says why."""


def has_suffix(path: Path) -> bool:
    """Whether ``path`` names a Markdown or text file (by its suffix, in any case)."""
    return path.suffix.lower() in SUFFIXES


def _walk(folder: Path) -> Iterable[Path]:
    """Files under ``folder`` with a known suffix, sorted; hidden files and folders left out."""
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root, name)
            if not name.startswith(".") and has_suffix(path):
                yield path


def find_files(paths: Iterable[str | os.PathLike[str]]) -> FoundFiles:
    """Expand ``paths``: a file is taken as given, a folder is walked for known suffixes."""
    found = FoundFiles()
    seen: set[Path] = set()
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            candidates = list(_walk(path))
        elif path.is_file():
            if not has_suffix(path):
                found.skipped.append(Skipped(str(path), f"not a {', '.join(SUFFIXES)} file"))
                continue
            candidates = [path]
        elif path.exists():
            found.skipped.append(Skipped(str(path), "not a regular file"))
            continue
        else:
            found.skipped.append(Skipped(str(path), "no such file or folder"))
            continue
        for candidate in candidates:
            if candidate not in seen:
                seen.add(candidate)
                found.files.append(candidate)
    return found


def read_source(path: Path) -> SourceText:
    """The UTF-8 text of ``path``; raises ``UnreadableFile`` for unreadable or binary files."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"cannot read: {exc.strerror or exc}") from None
    if b"\x00" in data:
        raise UnreadableFile("binary file (contains NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(f"not valid UTF-8 (byte {exc.start})") from None
    return SourceText(text, hashlib.sha256(data).hexdigest())
