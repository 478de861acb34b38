"""Property-based fuzz of the HTTP API from its own /openapi.json (hypothesis, on a real
server process): bodies drawn from each operation's request schema, arbitrary JSON that it
does not allow, random path parameters. No response is a 5xx, and every JSON response
conforms to the schema the OpenAPI document gives for its status. Bounded in examples and time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.conftest import ServeProcess, serving

pytestmark = pytest.mark.timeout(120)
EXAMPLES = 25
BUDGET_S = 45.0

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_segment = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
    min_size=1,
    max_size=12,
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    yield from (servers[0] for servers in serving("sqlite", tmp))


def from_schema(schema: Any, spec: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of a JSON schema, for the subset FastAPI writes (objects, arrays, unions, enums,
    string/number bounds, ``$ref``). Deep or unknown parts become arbitrary JSON."""
    if not isinstance(schema, dict) or depth > 6:
        return _json
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return from_schema(spec["components"]["schemas"][name], spec, depth + 1)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return st.one_of([from_schema(s, spec, depth + 1) for s in schema[union]])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, spec, depth + 1) for k, v in props.items() if k in required},
            optional={
                k: from_schema(v, spec, depth + 1) for k, v in props.items() if k not in required
            },
        )
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), spec, depth + 1), max_size=3)
    if kind == "string":
        return st.text(
            min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 12), 12)
        )
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if kind == "number":
        return st.floats(
            schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return _json


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if path not in ("/docs", "/docs/oauth2-redirect", "/redoc"):
                yield path, method.upper(), operation


def _with_components(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "components": spec.get("components", {})}


def _check(spec: dict[str, Any], operation: dict[str, Any], response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    documented = operation.get("responses", {}).get(str(response.status_code))
    assert documented is not None, (response.status_code, response.text)
    content = documented.get("content", {}).get("application/json")
    if content and response.headers.get("content-type", "").startswith("application/json"):
        jsonschema.validate(response.json(), _with_components(content["schema"], spec))


def _fuzz(
    spec: dict[str, Any],
    http: httpx.Client,
    path: str,
    method: str,
    operation: dict[str, Any],
    bodies: st.SearchStrategy[Any],
    names: list[str],
) -> Any:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies, params=st.fixed_dictionaries({n: _segment for n in names}))
    def check(body: Any, params: dict[str, str]) -> None:
        url = path.format(**params)
        if body is None:
            response = http.request(method, url)
        else:
            response = http.request(
                method,
                url,
                content=json.dumps(body),
                headers={"content-type": "application/json"},
            )
        _check(spec, operation, response)

    return check


def test_fuzz_openapi(fuzzed: ServeProcess) -> None:
    spec = httpx.get(f"{fuzzed.url}/openapi.json").json()
    started = time.monotonic()
    http = httpx.Client(base_url=fuzzed.url, timeout=30)
    checked = 0
    for path, method, operation in _operations(spec):
        body_schema = (
            operation.get("requestBody", {})
            .get("content", {})
            .get("application/json", {})
            .get("schema")
        )
        bodies = st.none() | _json
        if body_schema is not None:
            bodies = from_schema(body_schema, spec) | bodies
        names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]

        check = _fuzz(spec, http, path, method, operation, bodies, names)
        check()
        checked += 1
        assert time.monotonic() - started < BUDGET_S, f"fuzzing took over {BUDGET_S} s"
    http.close()
    assert checked >= 25, checked
