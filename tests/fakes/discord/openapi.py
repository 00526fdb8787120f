"""Discord's OpenAPI description as validators, and its errors in Discord's error shape."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

#: (path, code, message) of one refused field, as Discord reports it.
FormError = tuple[list[str | int], str, str]


class OpenAPI:
    """Request-body (and some response-body) validators from Discord's OpenAPI description."""

    def __init__(self, spec_path: Path) -> None:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        schemas = spec["components"]["schemas"]
        # Quirk: the description types snowflakes as strings, but Discord accepts integers too
        # and discord.py sends e.g. attachment ids ``{"id": 0}`` as ints.
        if "SnowflakeType" in schemas:
            snowflake = schemas["SnowflakeType"]
            schemas["SnowflakeType"] = {
                "anyOf": [snowflake, {"type": "integer", "minimum": 0}],
            }
        self.spec = spec
        resource: Resource[Any] = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource("urn:discord-openapi", resource)
        self.templates: list[tuple[re.Pattern[str], str, int]] = []
        for template in spec["paths"]:
            regex = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            literal = sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))
            self.templates.append((re.compile(regex), template, literal))
        self.templates.sort(key=lambda t: -t[2])
        self._validators: dict[tuple[str, str], Draft202012Validator | None] = {}

    def match(self, path: str) -> str | None:
        """Return the OpenAPI path template for a concrete path (most literal match wins)."""
        for regex, template, _ in self.templates:
            if regex.match(path):
                return template
        return None

    def has_operation(self, method: str, template: str) -> bool:
        """Whether the description documents this method on this path template."""
        return method.lower() in self.spec["paths"].get(template, {})

    @staticmethod
    def _pointer(*parts: str) -> str:
        return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)

    def response_validator(self, method: str, template: str, status: int) -> Draft202012Validator:
        """A validator for the JSON body the description documents for this answer."""
        pointer = self._pointer(
            "paths",
            template,
            method.lower(),
            "responses",
            str(status),
            "content",
            "application/json",
            "schema",
        )
        return Draft202012Validator(
            {"$ref": f"urn:discord-openapi#/{pointer}"}, registry=self.registry
        )

    def validator(self, method: str, template: str) -> Draft202012Validator | None:
        """A validator for the JSON request body of this operation (None: it takes none)."""
        key = (method.lower(), template)
        if key not in self._validators:
            op = self.spec["paths"].get(template, {}).get(method.lower())
            content = (op or {}).get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                self._validators[key] = None
            else:
                pointer = self._pointer(
                    "paths",
                    template,
                    method.lower(),
                    "requestBody",
                    "content",
                    "application/json",
                    "schema",
                )
                schema = {"$ref": f"urn:discord-openapi#/{pointer}"}
                self._validators[key] = Draft202012Validator(schema, registry=self.registry)
        return self._validators[key]


@functools.lru_cache(maxsize=4)
def load_openapi(spec_path: Path) -> OpenAPI:
    """Parse the description once per process (it is read-only once built)."""
    return OpenAPI(spec_path)


_ERROR_CODES = {
    "maxLength": "BASE_TYPE_MAX_LENGTH",
    "minLength": "BASE_TYPE_MIN_LENGTH",
    "maxItems": "BASE_TYPE_MAX_LENGTH",
    "minItems": "BASE_TYPE_MIN_LENGTH",
    "type": "BASE_TYPE_BAD_TYPE",
    "required": "BASE_TYPE_REQUIRED",
    "enum": "BASE_TYPE_CHOICES",
    "pattern": "STRING_TYPE_REGEX",
    "maximum": "NUMBER_TYPE_MAX",
    "minimum": "NUMBER_TYPE_MIN",
}


def form_errors(items: Iterable[FormError]) -> dict[str, Any]:
    """Build Discord's nested ``errors`` object from (path, code, message) triples."""
    out: dict[str, Any] = {}
    for path, code, message in items:
        node = out
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})
    return out


def schema_errors(errors: Iterable[ValidationError]) -> list[FormError]:
    """Translate JSON-schema failures into Discord's (path, code, message) triples."""
    out: list[FormError] = []
    for err in errors:
        # Descend into the most relevant branch of anyOf/oneOf failures.
        leaf = err
        while leaf.context:
            leaf = min(leaf.context, key=lambda e: (-len(e.absolute_path), len(e.context or [])))
        path = list(err.absolute_path) or list(leaf.absolute_path)
        code = _ERROR_CODES.get(str(leaf.validator), "BASE_TYPE_INVALID")
        out.append((path, code, leaf.message[:300]))
    return out
