"""A tiny random-weight Mixtral-style GGUF for tests: 8 experts, 2 per token.

llama.cpp reads it as its ``llama`` architecture with ``expert_count`` set, as it reads
Mixtral: per layer a router ``ffn_gate_inp`` of ``{n_embd, n_expert}`` and the experts stacked
in ``ffn_gate_exps`` / ``ffn_up_exps`` of ``{n_embd, n_ff, n_expert}`` and ``ffn_down_exps`` of
``{n_ff, n_embd, n_expert}`` (ggml's order, innermost first; numpy's shapes are the reverse).
The tokenizer, vocabulary and chat template are copied from the SmolLM2 GGUF, so that the
``llamacpp`` engine can format prompts; what the model generates is nonsense.

Run ``python -m tests.tiny_moe PATH`` to write one.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from mvm_chat.engines.llamacpp import resolve_model_path

LAYERS = 2
HIDDEN = 64
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS
FFN = 128
"""The width of one expert's FFN."""
EXPERTS = 8
EXPERTS_PER_TOKEN = 2
CONTEXT = 512
VOCAB = 49152
"""SmolLM2's vocabulary."""
SEED = 20240613


@functools.cache
def smollm2_tokenizer() -> list[tuple[str, Any, gguf.GGUFValueType, gguf.GGUFValueType | None]]:
    """Every ``tokenizer.*`` key of the SmolLM2 GGUF: (key, value, type, array item type).

    Cached: reading the 49152 tokens and 48900 merges takes the gguf package seconds."""
    reader = gguf.GGUFReader(resolve_model_path("builtin:smollm2-135m"))
    keys = []
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            item_type = field.types[1]
            items = [field.parts[i] for i in field.data]
            if item_type == gguf.GGUFValueType.STRING:
                value: Any = [bytes(item) for item in items]
            else:
                value = [item[0].item() for item in items]
            keys.append((name, value, vtype, item_type))
        elif vtype == gguf.GGUFValueType.STRING:
            keys.append((name, bytes(field.parts[field.data[0]]).decode("utf-8"), vtype, None))
        else:
            keys.append((name, field.parts[field.data[0]][0].item(), vtype, None))
    return keys


def tensor_shapes(vocab: int = VOCAB) -> dict[str, tuple[int, ...]]:
    """Every tensor the file holds and its numpy shape."""
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (vocab, HIDDEN),
        "output_norm.weight": (HIDDEN,),
        "output.weight": (vocab, HIDDEN),
    }
    for i in range(LAYERS):
        blk = f"blk.{i}"
        shapes |= {
            f"{blk}.attn_norm.weight": (HIDDEN,),
            f"{blk}.attn_q.weight": (HEADS * HEAD_DIM, HIDDEN),
            f"{blk}.attn_k.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            f"{blk}.attn_v.weight": (KV_HEADS * HEAD_DIM, HIDDEN),
            f"{blk}.attn_output.weight": (HIDDEN, HEADS * HEAD_DIM),
            f"{blk}.ffn_norm.weight": (HIDDEN,),
            f"{blk}.ffn_gate_inp.weight": (EXPERTS, HIDDEN),
            f"{blk}.ffn_gate_exps.weight": (EXPERTS, FFN, HIDDEN),
            f"{blk}.ffn_up_exps.weight": (EXPERTS, FFN, HIDDEN),
            f"{blk}.ffn_down_exps.weight": (EXPERTS, HIDDEN, FFN),
        }
    return shapes


def write_tiny_moe(path: Path | str, split_max_tensors: int = 0, tokenizer: bool = True) -> Path:
    """Write the tiny MoE GGUF (all weights f32, some 29 MB) to ``path``; return it.

    With ``split_max_tensors``, as ``gguf-split`` shards ``STEM-0000N-of-0000M.gguf`` of at
    most that many tensors each; the first shard's path is returned. Without ``tokenizer``
    the file cannot be served, but is written and read seconds faster."""
    path = Path(path)
    keys = smollm2_tokenizer() if tokenizer else []
    for key, value, *_ in keys:
        if key == "tokenizer.ggml.tokens" and len(value) != VOCAB:
            raise ValueError(f"SmolLM2's vocabulary has {len(value)} tokens, not {VOCAB}")
    writer = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    writer.add_name("tiny-moe")
    writer.add_block_count(LAYERS)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_expert_count(EXPERTS)
    writer.add_expert_used_count(EXPERTS_PER_TOKEN)
    writer.add_vocab_size(VOCAB)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for key, value, vtype, item_type in keys:
        writer.add_key_value(key, value, vtype, item_type)
    rng = np.random.default_rng(SEED)
    for name, shape in tensor_shapes().items():
        if len(shape) == 1:
            data = np.ones(shape, dtype=np.float32)
        else:
            data = rng.normal(0.0, 0.05, size=shape).astype(np.float32)
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:
        return next(iter(sorted(path.parent.glob(f"{path.stem}-00001-of-*.gguf"))))
    return path


if __name__ == "__main__":
    print(write_tiny_moe(sys.argv[1]))
