"""Deterministic stand-ins for model output, shared by the mock provider and the fake LLM server.

Standard library only, so the fake server stays dependency-free and the mock provider and the
fake server agree on what "echo" text, schema-shaped JSON and hash embeddings look like.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import uuid
from collections.abc import Mapping
from typing import Any

__all__ = ["count_tokens", "echo_text", "example_from_schema", "hash_embedding"]

_MAX_DEPTH = 12


def count_tokens(text: str) -> int:
    """A cheap, stable token estimate: one token per whitespace-separated word."""
    return len(text.split())


def echo_text(prompt: str) -> str:
    return f"echo: {prompt}"


def hash_embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector derived from ``sha256(text)``: equal texts embed equally, across processes."""
    if dimensions <= 0:
        raise ValueError(f"dimensions must be positive, got {dimensions}")
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{block}\x00{text}".encode()).digest()
        for (word,) in struct.iter_unpack("<I", digest):
            values.append(word / 2**31 - 1.0)
        block += 1
    values = values[:dimensions]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def example_from_schema(schema: Mapping[str, Any] | None, *, seed: str = "") -> Any:
    """A deterministic instance of a JSON schema, good enough for simple pydantic models.

    Every property is filled (optional ones too), ``$ref``/``$defs`` are followed, the first
    ``enum``/``anyOf`` choice is taken, and numeric/length bounds are respected. Gemini's
    upper-case OpenAPI type names (``"OBJECT"``, ``"STRING"``) are accepted as well.
    """
    if not schema:
        return {}
    return _Filler(schema, seed).fill(schema, "value", 0)


class _Filler:
    def __init__(self, root: Mapping[str, Any], seed: str) -> None:
        self.root = root
        self.seed = seed

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while "$ref" in schema and seen < _MAX_DEPTH:
            ref = str(schema["$ref"])
            target: Any = self.root
            for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else []:
                target = target.get(part, {}) if isinstance(target, Mapping) else {}
            schema = target if isinstance(target, Mapping) else {}
            seen += 1
        return schema

    def fill(self, schema: Mapping[str, Any], name: str, depth: int) -> Any:
        schema = self.resolve(schema)
        if depth > _MAX_DEPTH:
            return None
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                options = [self.resolve(o) for o in schema[key]]
                non_null = [o for o in options if _type_of(o) != "null"]
                return self.fill((non_null or options)[0], name, depth + 1)
        if schema.get("allOf"):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self.resolve(part))
            return self.fill(merged, name, depth + 1)
        kind = _type_of(schema)
        if kind == "object":
            props = schema.get("properties") or {}
            return {key: self.fill(sub, key, depth + 1) for key, sub in props.items()}
        if kind == "array":
            return self.array(schema, name, depth)
        if kind == "string":
            return self.string(schema, name)
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self.string(schema, name)

    def array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        count = max(int(schema.get("minItems", 1)), 1)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        items = schema.get("items") or {}
        return [self.fill(items, name, depth + 1) for _ in range(count)]

    def string(self, schema: Mapping[str, Any], name: str) -> str:
        fmt = schema.get("format")
        digest = hashlib.sha256(f"{self.seed}\x00{name}".encode()).hexdigest()
        by_format = {
            "date-time": "2024-01-01T00:00:00Z",
            "date": "2024-01-01",
            "time": "00:00:00",
            "email": "user@example.com",
            "uri": "https://example.com/",
            "url": "https://example.com/",
            "uuid": str(uuid.UUID(digest[:32])),
        }
        lowered = name.lower()
        if fmt is None and "email" in lowered:
            fmt = "email"
        elif fmt is None and lowered.endswith(("url", "uri", "link")):
            fmt = "uri"
        text = by_format.get(str(fmt), f"mock {name}")
        pattern = schema.get("pattern")
        if pattern and not _matches(str(pattern), text):
            # JSON-schema patterns are unanchored searches: try a few common shapes.
            candidates = [*by_format.values(), "a", "A", "1", "a1", "mock"]
            text = next((c for c in candidates if _matches(str(pattern), c)), text)
        min_len = int(schema.get("minLength", 0))
        if len(text) < min_len:
            text += "x" * (min_len - len(text))
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text


def _matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return True  # a pattern Python cannot compile: nothing better to offer


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [str(k).lower() for k in kind if str(k).lower() != "null"]
        return non_null[0] if non_null else "null"
    if kind is None:
        if "properties" in schema:
            return "object"
        if "items" in schema:
            return "array"
        return ""
    return str(kind).lower()


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    value: float = 1
    if "minimum" in schema:
        value = float(schema["minimum"])
    elif "exclusiveMinimum" in schema:
        value = float(schema["exclusiveMinimum"]) + 1
    if "maximum" in schema:
        value = min(value, float(schema["maximum"]))
    elif "exclusiveMaximum" in schema and value >= float(schema["exclusiveMaximum"]):
        value = float(schema["exclusiveMaximum"]) - (1 if integer else 0.5)
    return math.ceil(value) if integer else value
