"""``mvm-chat models inspect``: the :class:`Architecture` of a model, wherever it is described.

A source is a GGUF file (``inspect_gguf.py``), a Hugging Face ``config.json`` or a folder
holding one (``inspect_hf.py``), the root URL of a running SGLang server, ``builtin:NAME`` (a
GGUF shipped in a Python package), or a name in the reference catalog.

SGLang 0.5.9's ``/model_info`` says which checkpoint it serves (``model_path``, ``model_type``)
but not its shapes, and ``/server_info`` how (``context_length``, ``quantization``); the shapes
come from the checkpoint's ``config.json`` when ``model_path`` is a folder on this machine,
else from the catalog entry of that Hugging Face repository.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from mvm_chat.engines import catalog
from mvm_chat.engines.architecture import Architecture
from mvm_chat.engines.inspect_gguf import GGUFUnreadable, gguf_architecture, is_gguf
from mvm_chat.engines.inspect_hf import ConfigUnreadable, config_architecture
from mvm_chat.errors import ConfigError, MvmChatError

SGLANG_TIMEOUT_S = 10.0
_VARIANT = re.compile(
    r"^(instruct|it|chat|base|hf|fp8|bf16|awq|gptq|int4|int8|v\d+(\.\d+)*|\d{4})$"
)
"""Trailing parts of a repository name that name a variant of the same architecture."""


class UnreadableSource(MvmChatError):
    """The source is missing, unreachable, or does not describe a model's architecture."""


def architecture_of(source: str) -> Architecture:
    """The architecture ``source`` describes; raises :class:`UnreadableSource`."""
    try:
        if source.startswith(("http://", "https://")):
            return sglang_architecture(source)
        if source.startswith("builtin:"):
            from mvm_chat.engines.llamacpp import resolve_model_path

            try:
                path = resolve_model_path(source)
            except ConfigError as exc:
                raise UnreadableSource(exc.problem) from None
            return gguf_architecture(path, source)
        path = Path(source).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise UnreadableSource(f"{source}: a folder without a config.json")
            return config_architecture(path / "config.json")
        if path.is_file():
            if is_gguf(path):
                return gguf_architecture(path)
            return config_architecture(path)
        found = catalog.reference(source)
        if found is None:
            raise UnreadableSource(
                f"{source}: no such file, and not a catalog model "
                f"(known: {', '.join(catalog.names())})"
            )
        return found
    except (GGUFUnreadable, ConfigUnreadable) as exc:
        raise UnreadableSource(str(exc)) from None
    except OSError as exc:
        raise UnreadableSource(f"{source}: {exc.strerror or exc}") from None


def sglang_architecture(url: str) -> Architecture:
    """The architecture an SGLang server at ``url`` serves, with its context and quantisation."""
    root = url.rstrip("/")
    with httpx.Client(timeout=SGLANG_TIMEOUT_S) as client:
        model = _sglang_json(client, root, "model_info")
        server = _sglang_json(client, root, "server_info")
    model_path = str(model.get("model_path") or server.get("model_path") or "")
    if not model_path:
        raise UnreadableSource(f"{root}/model_info names no model_path")
    local = Path(model_path).expanduser() / "config.json"
    if local.is_file():
        arch = config_architecture(local)
    else:
        found = catalog_match(model_path)
        if found is None:
            raise UnreadableSource(
                f"{root} serves {model_path!r}: its config.json is not on this machine and "
                "it is not in the catalog; inspect its config.json instead"
            )
        arch = found
    changes: dict[str, Any] = {"name": str(server.get("served_model_name") or model_path)}
    if isinstance(model.get("model_type"), str):
        changes["architecture"] = model["model_type"]
    if isinstance(server.get("context_length"), int):
        changes["context_length"] = server["context_length"]
    if server.get("quantization"):
        changes["quantization"] = str(server["quantization"])
    return replace(arch, **changes, source=f"{root} ({model_path}; shapes: {arch.source})")


def catalog_match(model_path: str) -> Architecture | None:
    """The catalog entry of a Hugging Face repository id or folder name, ignoring variant
    suffixes (``-Instruct``, ``-v0.1``, ``-FP8``...)."""
    wanted = model_path.strip().rstrip("/").lower()
    for ref in catalog.REFERENCES.values():
        if ref.hf_id.lower() == wanted:
            return ref.architecture
    parts = wanted.rsplit("/", 1)[-1].split("-")
    while parts:
        found = catalog.reference("-".join(parts))
        if found is not None or not _VARIANT.match(parts[-1]):
            return found
        parts.pop()
    return None


def _sglang_json(client: httpx.Client, root: str, route: str) -> dict[str, Any]:
    """``/{route}``, or ``/get_{route}`` on versions before their rename."""
    for path in (route, f"get_{route}"):
        try:
            response = client.get(f"{root}/{path}")
        except httpx.HTTPError as exc:
            raise UnreadableSource(f"{root}: unreachable ({type(exc).__name__})") from None
        if response.status_code == 404:
            continue
        if response.status_code != 200:
            raise UnreadableSource(f"{root}/{path} answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise UnreadableSource(f"{root}/{path} did not answer a JSON object")
        return body
    raise UnreadableSource(f"{root} has neither /{route} nor /get_{route}: not an SGLang server")
