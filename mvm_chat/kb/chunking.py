"""Splitting documents into passages small enough to retrieve and to put in a prompt.

Markdown is split at its headings, then at blank lines; each chunk keeps the nearest heading
above it. Plain text is split at blank lines. Paragraphs are packed together up to
``max_chars``; a longer paragraph is cut at sentence ends, then at spaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

MAX_CHARS = 1000
MARKDOWN_SUFFIXES = (".md", ".markdown")

_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One passage of a document: its position, the heading it sits under, and its text."""

    seq: int
    heading: str
    text: str


@dataclass(frozen=True, slots=True)
class Section:
    """The text between two headings, and the heading it starts with ("" before the first)."""

    heading: str
    level: int
    body: str


def markdown_sections(text: str) -> list[Section]:
    """The sections of a Markdown document, split at ATX headings outside code fences."""
    sections: list[Section] = []
    heading, level = "", 0
    lines: list[str] = []
    fence: str | None = None
    for line in text.splitlines():
        fence_mark = _FENCE.match(line)
        if fence_mark:
            mark = fence_mark.group(1)
            if fence is None:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence):
                fence = None
        match = _HEADING.match(line) if fence is None and not fence_mark else None
        if match:
            sections.append(Section(heading, level, "\n".join(lines)))
            heading, level, lines = (match.group(2) or "").strip(), len(match.group(1)), []
        else:
            lines.append(line)
    sections.append(Section(heading, level, "\n".join(lines)))
    return [s for s in sections if s.heading or s.body.strip()]


def paragraphs(text: str) -> list[str]:
    """The non-empty paragraphs of ``text`` (separated by blank lines), trimmed."""
    return [p.strip() for p in _BLANK_LINES.split(text.replace("\r\n", "\n")) if p.strip()]


def _cut(paragraph: str, max_chars: int) -> Iterator[str]:
    """Pieces of one paragraph, each at most ``max_chars``: at sentence ends, then spaces."""
    if len(paragraph) <= max_chars:
        yield paragraph
        return
    piece = ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 0, max_chars + 1)
            cut = cut if cut > 0 else max_chars
            if piece:
                yield piece
                piece = ""
            yield sentence[:cut].rstrip()
            sentence = sentence[cut:].lstrip()
        if piece and len(piece) + 1 + len(sentence) > max_chars:
            yield piece
            piece = ""
        piece = f"{piece} {sentence}" if piece else sentence
    if piece:
        yield piece


def pack(parts: list[str], max_chars: int) -> list[str]:
    """Paragraphs joined by blank lines into as few pieces of at most ``max_chars`` as fit."""
    packed: list[str] = []
    current = ""
    for paragraph in parts:
        for piece in _cut(paragraph, max_chars):
            if current and len(current) + 2 + len(piece) > max_chars:
                packed.append(current)
                current = ""
            current = f"{current}\n\n{piece}" if current else piece
    if current:
        packed.append(current)
    return packed


def chunk_markdown(text: str, max_chars: int = MAX_CHARS) -> list[Chunk]:
    """Chunks of a Markdown document, each under the nearest heading above it."""
    chunks: list[Chunk] = []
    for section in markdown_sections(text):
        for piece in pack(paragraphs(section.body), max_chars):
            chunks.append(Chunk(len(chunks), section.heading, piece))
    return chunks


def chunk_text(text: str, max_chars: int = MAX_CHARS) -> list[Chunk]:
    """Chunks of a plain-text document, by paragraphs, without headings."""
    return [Chunk(i, "", piece) for i, piece in enumerate(pack(paragraphs(text), max_chars))]


def chunk_document(text: str, filename: str, max_chars: int = MAX_CHARS) -> list[Chunk]:
    """Chunks of ``text``, as Markdown or as plain text according to ``filename``'s suffix."""
    if filename.lower().endswith(MARKDOWN_SUFFIXES):
        return chunk_markdown(text, max_chars)
    return chunk_text(text, max_chars)


def document_title(text: str, filename: str) -> str:
    """The first top-level Markdown heading, else the file's name without its suffix."""
    if filename.lower().endswith(MARKDOWN_SUFFIXES):
        for section in markdown_sections(text):
            if section.level == 1 and section.heading:
                return section.heading
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name
