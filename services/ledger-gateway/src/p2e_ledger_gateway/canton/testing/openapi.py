"""The Canton JSON Ledger API's OpenAPI spec as a judge of httpx requests and responses.

openapi-core has no httpx integration, so `HttpxOpenAPIRequest` / `HttpxOpenAPIResponse`
implement its request and response protocols. On top of openapi-core's validation,
`unknown_fields` reports object keys the spec does not declare: Canton's JSON API rejects
those ("Unexpected fields"), while the spec's schemas do not forbid them.

Test-only: imports openapi-core (a dev dependency); production code never imports it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS30Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_NAME = "canton-json-api-v2.openapi.yaml"
SPEC_ENV = "P2E_CANTON_OPENAPI_SPEC"


class SpecViolation(AssertionError):
    """A request the adapter sent, or an answer the fake gave, breaks the OpenAPI spec."""


def spec_path() -> Path:
    """$P2E_CANTON_OPENAPI_SPEC, else the copy vendored in services/ledger-gateway/specs/."""
    if env := os.environ.get(SPEC_ENV):
        return Path(env)
    for folder in Path(__file__).resolve().parents:
        candidate = folder / "specs" / SPEC_NAME
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{SPEC_NAME} not found; set {SPEC_ENV} to its path")


@dataclass(frozen=True)
class CantonSpec:
    """The parsed spec: openapi-core's validator plus the raw document."""

    openapi: OpenAPI
    raw: dict[str, Any]

    def schema(self, name: str) -> dict[str, Any]:
        return self.raw["components"]["schemas"][name]

    def validate_request(self, request: httpx.Request) -> None:
        try:
            self.openapi.validate_request(HttpxOpenAPIRequest(request))
        except Exception as exc:  # openapi-core raises several unrelated classes
            raise SpecViolation(f"{request.method} {request.url.path}: {_explain(exc)}") from exc

    def validate_response(self, request: httpx.Request, response: httpx.Response) -> None:
        try:
            self.openapi.validate_response(
                HttpxOpenAPIRequest(request), HttpxOpenAPIResponse(response)
            )
        except Exception as exc:
            raise SpecViolation(
                f"answer {response.status_code} to {request.method} {request.url.path}: "
                f"{_explain(exc)}"
            ) from exc

    def validate_schema(self, name: str, value: Any) -> None:
        """`value` against components/schemas/<name> (refs resolved in the whole document)."""
        schema = {"$ref": f"#/components/schemas/{name}", "components": self.raw["components"]}
        errors = sorted(OAS30Validator(schema).iter_errors(value), key=str)
        if errors:
            raise SpecViolation(f"not a valid {name}: {errors[0].message}")

    def request_schema(self, method: str, path_pattern: str) -> dict[str, Any] | None:
        operation = self.raw["paths"][path_pattern][method.lower()]
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        return body["schema"] if body else None

    def unknown_fields(self, schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
        """Paths of keys in `value` that `schema` does not declare."""
        schema = self._resolve(schema)
        found: list[str] = []
        if "oneOf" in schema:
            branch = self._branch(schema["oneOf"], value)
            return self.unknown_fields(branch, value, where) if branch else []
        for part in schema.get("allOf", []):
            found += self.unknown_fields(part, value, where)
        if isinstance(value, dict) and ("properties" in schema or "additionalProperties" in schema):
            properties = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in properties:
                    found += self.unknown_fields(properties[key], item, f"{where}.{key}")
                elif isinstance(extra, dict):
                    found += self.unknown_fields(extra, item, f"{where}.{key}")
                elif extra is not True:
                    found.append(f"{where}.{key}")
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                found += self.unknown_fields(schema["items"], item, f"{where}[{index}]")
        return found

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.raw
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def _branch(self, branches: list[dict[str, Any]], value: Any) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            return None
        fitting = [b for b in branches if set(self._resolve(b).get("required", [])) <= set(value)]
        return fitting[0] if len(fitting) == 1 else None


@functools.cache
def load_spec(path: str | None = None) -> CantonSpec:
    """The spec, parsed once per process (it is ~300 KB of YAML)."""
    source = Path(path) if path else spec_path()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    raw = yaml.load(source.read_text(encoding="utf-8"), Loader=loader)
    return CantonSpec(OpenAPI.from_dict(raw), raw)


class HttpxOpenAPIRequest:
    """openapi-core's Request protocol over an `httpx.Request`."""

    def __init__(self, request: httpx.Request) -> None:
        self.request = request
        query = parse_qs(request.url.query.decode("ascii"), keep_blank_values=True)
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(query), header=Headers(dict(request.headers))
        )

    @property
    def host_url(self) -> str:
        return f"{self.request.url.scheme}://{self.request.url.netloc.decode('ascii')}"

    @property
    def path(self) -> str:
        return self.request.url.path

    @property
    def method(self) -> str:
        return self.request.method.lower()

    @property
    def body(self) -> bytes | None:
        return self.request.content or None

    @property
    def content_type(self) -> str:
        return self.request.headers.get("content-type", "")


class HttpxOpenAPIResponse:
    """openapi-core's Response protocol over an `httpx.Response`."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return self.response.headers.get("content-type", "")

    @property
    def headers(self) -> Headers:
        return Headers(dict(self.response.headers))

    @property
    def data(self) -> bytes:
        return self.response.content


def _explain(exc: BaseException) -> str:
    causes = [str(exc)]
    inner = exc.__cause__ or exc.__context__
    while inner is not None and len(causes) < 4:
        causes.append(str(inner))
        inner = inner.__cause__ or inner.__context__
    return " <- ".join(c for c in causes if c)[:2000]
