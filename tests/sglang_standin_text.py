"""Canned, deterministic answers for the SGLang stand-in (``tests/sglang_standin.py``).

Not a model: an answer echoes the prompt, split into "tokens" at whitespace; token ids and
logprobs are hashes of the token text. A ``regex`` or ``json_schema`` constraint is honoured by
building a string that matches it (for a regex's alternatives, the first one the prompt mentions).
Also here: the Prometheus exposition text the stand-in serves at ``/metrics``.
"""

from __future__ import annotations

import json
import re
import re._parser as sre_parse  # the module SGLang's sampling_params.py walks regexes with
import zlib
from dataclasses import dataclass
from typing import Any

EOS_TOKEN_ID = 2
VOCAB_SIZE = 49152


def pieces_of(text: str) -> list[str]:
    """The stand-in's tokens: each run of non-space characters with the spaces before it (and
    trailing spaces on the last one), so that they join back into ``text``."""
    pieces: list[str] = re.findall(r"\s*\S+", text)
    rest = text[len("".join(pieces)) :]
    if rest and pieces:
        pieces[-1] += rest
    elif rest:
        pieces = [rest]
    return pieces


def token_id(piece: str) -> int:
    return 3 + zlib.crc32(piece.encode("utf-8")) % (VOCAB_SIZE - 3)


def logprob_of(piece: str, fixed: float | None) -> float:
    """A deterministic logprob in (-0.5, 0], or ``fixed`` when the test set one."""
    if fixed is not None:
        return fixed
    return -(zlib.crc32(piece.encode("utf-8")) % 500) / 1000


def render_chat(messages: list[dict[str, Any]]) -> str:
    """A ChatML-style rendering, as a server applies a chat template (for token counts)."""
    turns = [f"<|im_start|>{m['role']}\n{text_of(m.get('content'))}<|im_end|>\n" for m in messages]
    return "".join(turns) + "<|im_start|>assistant\n"


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


@dataclass
class Answer:
    pieces: list[str]
    finish: dict[str, Any]
    """SGLang's finish_reason object: ``{"type": "stop", "matched": ...}`` or ``length``."""

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def answer(hint: str, sampling: dict[str, Any]) -> Answer:
    """The answer to a prompt whose last user text is ``hint``, under SGLang ``sampling``
    params (``regex``, ``json_schema``, ``max_new_tokens``, ``stop``)."""
    if sampling.get("regex") is not None:
        text = sample_regex(str(sampling["regex"]), hint)
    elif sampling.get("json_schema") is not None:
        text = json.dumps(sample_schema(json.loads(sampling["json_schema"])))
    else:
        text = f"You said: {hint.strip()}" if hint.strip() else "Hello! How can I help?"
    stops = sampling.get("stop") or []
    for stop in [stops] if isinstance(stops, str) else stops:
        if stop and stop in text:
            return Answer(pieces_of(text[: text.index(stop)]), {"type": "stop", "matched": stop})
    pieces = pieces_of(text)
    limit = sampling.get("max_new_tokens")
    if limit is not None and len(pieces) > limit:
        return Answer(pieces[:limit], {"type": "length", "length": limit})
    return Answer(pieces, {"type": "stop", "matched": EOS_TOKEN_ID})


def sample_regex(pattern: str, hint: str) -> str:
    """A string that fully matches ``pattern``; of alternatives, the one ``hint`` mentions last
    (else the first).

    Raises ``ValueError`` for a pattern this little sampler cannot satisfy."""
    text = _emit(sre_parse.parse(pattern), hint.lower())
    if re.fullmatch(pattern, text) is None:
        raise ValueError(f"the stand-in cannot sample {pattern!r}")
    return text


_CATEGORY_CHAR = {
    sre_parse.CATEGORY_DIGIT: "0",
    sre_parse.CATEGORY_NOT_DIGIT: "a",
    sre_parse.CATEGORY_WORD: "a",
    sre_parse.CATEGORY_NOT_WORD: " ",
    sre_parse.CATEGORY_SPACE: " ",
    sre_parse.CATEGORY_NOT_SPACE: "a",
}


def _emit(parsed: Any, hint: str) -> str:
    out: list[str] = []
    for op, av in parsed:
        if op is sre_parse.LITERAL:
            out.append(chr(av))
        elif op is sre_parse.NOT_LITERAL:
            out.append("b" if av == ord("a") else "a")
        elif op is sre_parse.ANY:
            out.append("a")
        elif op is sre_parse.IN:
            out.append(_one_of(av))
        elif op is sre_parse.BRANCH:
            options = [_emit(branch, hint) for branch in av[1]]
            out.append(max(options, key=lambda o: _last_mention(o, hint)))
        elif op is sre_parse.SUBPATTERN:
            out.append(_emit(av[-1], hint))
        elif op in (sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT):
            low, _high, item = av
            out.append(_emit(item, hint) * low)
        elif op is sre_parse.AT:
            continue
        else:
            raise ValueError(f"the stand-in cannot sample regex construct {op}")
    return "".join(out)


def _last_mention(option: str, hint: str) -> int:
    """Where ``option`` last occurs in ``hint`` as a word (-1: never), for picking the
    alternative a prompt asks for ("... answer yes or no: no" gives "no")."""
    if not option.strip():
        return -1
    found = [m.start() for m in re.finditer(rf"(?<!\w){re.escape(option.lower())}(?!\w)", hint)]
    return found[-1] if found else -1


def _one_of(items: list[tuple[Any, Any]]) -> str:
    if items and items[0][0] is sre_parse.NEGATE:
        return "a"  # checked against the whole pattern by sample_regex
    op, av = items[0]
    if op is sre_parse.LITERAL:
        return chr(av)
    if op is sre_parse.RANGE:
        return chr(av[0])
    if op is sre_parse.CATEGORY:
        return _CATEGORY_CHAR.get(av, "a")
    raise ValueError(f"the stand-in cannot sample character class item {op}")


def sample_schema(schema: dict[str, Any]) -> Any:
    """A small value valid under a (simple) JSON Schema."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {k: sample_schema(v) for k, v in props.items() if k in required}
    if kind == "array":
        return [sample_schema(schema.get("items", {}))] * int(schema.get("minItems", 0))
    if kind == "string":
        return "a" * int(schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return True
    return None


def metrics_text(
    model_name: str,
    gauges: dict[str, float],
    counters: dict[str, float],
    dp_size: int,
) -> str:
    """``/metrics`` as SGLang serves it: prometheus_client's multiprocess registry (every HELP is
    "Multiprocess metric"), labels sorted, one series per scheduler (per ``dp_rank``)."""
    lines: list[str] = []
    ranks = list(range(dp_size))
    for name, total in gauges.items():
        lines += [f"# HELP {name} Multiprocess metric", f"# TYPE {name} gauge"]
        for rank in ranks:
            labels = {
                "engine_type": "unified",
                "model_name": model_name,
                "moe_ep_rank": "0",
                "pp_rank": "0",
                "tp_rank": "0",
            }
            if dp_size > 1:
                labels["dp_rank"] = str(rank)
            value = _share(name, total, rank, dp_size)
            lines.append(f"{name}{{{_labels(labels)}}} {value!r}")
    for name, value in counters.items():
        lines += [f"# HELP {name} Multiprocess metric", f"# TYPE {name} counter"]
        lines.append(f"{name}{{{_labels({'model_name': model_name})}}} {float(value)!r}")
    name = "sglang:time_to_first_token_seconds"
    lines += [f"# HELP {name} Multiprocess metric", f"# TYPE {name} histogram"]
    for le in ("0.1", "0.5", "1.0", "+Inf"):
        lines.append(f"{name}_bucket{{{_labels({'le': le, 'model_name': model_name})}}} 0.0")
    lines.append(f"{name}_count{{{_labels({'model_name': model_name})}}} 0.0")
    lines.append(f"{name}_sum{{{_labels({'model_name': model_name})}}} 0.0")
    return "\n".join(lines) + "\n"


def _share(name: str, total: float, rank: int, ranks: int) -> float:
    """Rank ``rank``'s part of ``total``: counts split across ranks, token usage the same."""
    if name.endswith("token_usage"):
        return float(total) if rank == 0 else float(total) / 2
    if name.endswith("_reqs"):
        whole = int(total)
        return float(whole // ranks + (1 if rank < whole % ranks else 0))
    return float(total) / ranks


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
