"""A GGUF file's architecture: its metadata, and parameters counted from its tensor shapes.

Metadata keys are llama.cpp's (``{arch}.block_count``, ``{arch}.attention.head_count_kv``...).
Routed experts are stored either stacked, one 3-D tensor per layer and projection
(``blk.N.ffn_gate_exps.weight``), or, in files older than April 2024, one 2-D tensor per expert
(``blk.N.ffn_gate.E.weight``); shared experts (``*_shexp``) and the router (``ffn_gate_inp``)
are read for every token and count as active.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gguf

from mvm_chat.engines.architecture import Architecture

GGUF_MAGIC = b"GGUF"
_STACKED_EXPERTS = re.compile(r"^blk\.\d+\.ffn_[a-z_]+_exps\.")
_SPLIT_EXPERTS = re.compile(r"^blk\.\d+\.ffn_(gate|up|down)\.\d+\.weight$")
_SHARD = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


class GGUFUnreadable(ValueError):
    """The file is not a GGUF file, or lacks what an architecture needs."""


def is_gguf(path: Path) -> bool:
    """Whether the file starts with the GGUF magic."""
    with path.open("rb") as file:
        return file.read(4) == GGUF_MAGIC


def gguf_architecture(path: Path, source: str = "") -> Architecture:
    """Read ``path``'s metadata and tensor shapes; raises :class:`GGUFUnreadable`."""
    given = _reader(path)
    shards = _shards(path, _Metadata(given).integer("split.count"))
    readers = [given if shard == path else _reader(shard) for shard in shards]
    meta = _Metadata(readers[0])
    arch = meta.string("general.architecture")
    if not arch:
        raise GGUFUnreadable(f"{path} has no general.architecture")

    layers = meta.integer(f"{arch}.block_count")
    hidden = meta.integer(f"{arch}.embedding_length")
    heads = meta.integer(f"{arch}.attention.head_count")
    if not (layers and hidden and heads):
        raise GGUFUnreadable(f"{path} lacks the block count, embedding length or head count")
    experts = meta.integer(f"{arch}.expert_count")
    experts = experts if experts > 1 else 0
    per_token = meta.integer(f"{arch}.expert_used_count") if experts else 0
    ffn = (meta.integer(f"{arch}.expert_feed_forward_length") if experts else 0) or meta.integer(
        f"{arch}.feed_forward_length"
    )

    tensors = [tensor for shard in readers for tensor in shard.tensors]
    names = {tensor.name for tensor in tensors}
    total = expert = 0
    for tensor in tensors:
        count = int(tensor.n_elements)
        total += count
        if _STACKED_EXPERTS.match(tensor.name) or _SPLIT_EXPERTS.match(tensor.name):
            expert += count
    active = (total - expert + expert * per_token // experts) if experts else total

    return Architecture(
        name=meta.string("general.name") or path.stem,
        architecture=arch,
        layers=layers,
        hidden_size=hidden,
        intermediate_size=ffn,
        attention_heads=heads,
        kv_heads=meta.integer(f"{arch}.attention.head_count_kv") or heads,
        head_dim=meta.integer(f"{arch}.attention.key_length") or hidden // heads,
        vocab_size=_vocab_size(tensors, meta, arch),
        context_length=meta.integer(f"{arch}.context_length"),
        total_params=total,
        active_params=active,
        experts=experts,
        experts_per_token=per_token,
        quantization=_quantization(tensors, meta),
        file_bytes=sum(shard.stat().st_size for shard in shards),
        tied_embeddings="output.weight" not in names,
        source=source or str(path),
    )


class _Metadata:
    """Typed reads of a reader's key/value fields; a missing key reads as 0 or ``""``."""

    def __init__(self, reader: gguf.GGUFReader) -> None:
        self.fields = reader.fields

    def _scalars(self, key: str) -> list[Any]:
        field = self.fields.get(key)
        if field is None or not field.types:
            return []
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            item_type = field.types[1] if len(field.types) > 1 else None
            indices = list(field.data)
        else:
            item_type, indices = field.types[0], list(field.data[:1])
        if item_type == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in indices]
        return [field.parts[i][0].item() for i in indices]

    def integer(self, key: str) -> int:
        """An integer; of a per-layer array, the largest."""
        values = [v for v in self._scalars(key) if isinstance(v, int | float)]
        return int(max(values)) if values else 0

    def string(self, key: str) -> str:
        values = self._scalars(key)
        return str(values[0]) if values else ""

    def length(self, key: str) -> int:
        """How many items an array field holds."""
        field = self.fields.get(key)
        return len(field.data) if field is not None else 0


def _reader(path: Path) -> gguf.GGUFReader:
    if not is_gguf(path):
        raise GGUFUnreadable(f"{path} is not a GGUF file")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError) as exc:
        raise GGUFUnreadable(f"{path}: cannot read its GGUF header ({exc})") from None


def _shards(path: Path, count: int) -> list[Path]:
    """Every file of a model split by ``gguf-split`` (``NAME-00001-of-00003.gguf``...), the
    first (which holds the metadata) first; just ``path`` when it is whole."""
    if count <= 1:
        return [path]
    named = _SHARD.match(path.name)
    if named is None or int(named["count"]) != count:
        raise GGUFUnreadable(f"{path} is one of {count} shards but its name does not say which")
    shards = [
        path.with_name(f"{named['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
    ]
    for shard in shards:
        if not shard.is_file():
            raise GGUFUnreadable(f"{shard}: a shard of {path.name}'s model is missing")
    return shards


def _vocab_size(tensors: list[gguf.ReaderTensor], meta: _Metadata, arch: str) -> int:
    size = meta.integer(f"{arch}.vocab_size") or meta.length("tokenizer.ggml.tokens")
    if size:
        return size
    for tensor in tensors:
        if tensor.name == "token_embd.weight":
            return int(max(tensor.shape))
    return 0


def _quantization(tensors: list[gguf.ReaderTensor], meta: _Metadata) -> str:
    """The file type's name (``Q4_1``, ``F16``...); without one, the type most weights have."""
    if "general.file_type" in meta.fields:
        try:
            name = gguf.LlamaFileType(meta.integer("general.file_type")).name
        except ValueError:
            name = ""
        if name:
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    by_type: dict[str, int] = {}
    for tensor in tensors:
        kind = tensor.tensor_type.name
        by_type[kind] = by_type.get(kind, 0) + int(tensor.n_elements)
    return max(by_type, key=lambda kind: by_type[kind]) if by_type else "unknown"
