"""The knowledge base: Markdown and text files, chunked and searched with full-text search."""

from __future__ import annotations

from mvm_chat.kb.chunking import Chunk, chunk_document, chunk_markdown, chunk_text
from mvm_chat.kb.documents import DocumentInfo, list_documents
from mvm_chat.kb.files import Skipped, find_files
from mvm_chat.kb.ingest import IngestReport, ingest
from mvm_chat.kb.search import search

__all__ = [
    "Chunk",
    "DocumentInfo",
    "IngestReport",
    "Skipped",
    "chunk_document",
    "chunk_markdown",
    "chunk_text",
    "find_files",
    "ingest",
    "list_documents",
    "search",
]
