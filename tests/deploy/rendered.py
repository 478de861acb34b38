"""The assets as their tools render them: ``kubectl kustomize`` for a kustomization,
``docker-compose config`` for the compose stack (with an env file made from env.example).
Each is rendered once per test session."""

from __future__ import annotations

import subprocess
import tempfile
from functools import cache
from typing import Any

import yaml

from tests.deploy.assets import DEPLOY
from tests.deploy.validate import compose_env, tool


@cache
def rendered(kustomization: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [tool("kubernetes", "kubectl"), "kustomize", str(DEPLOY / kustomization)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def one(kustomization: str, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in rendered(kustomization)
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kustomization}: {len(found)} {kind} {name or ''}"
    return found[0]


@cache
def compose() -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".env") as env_file:
        env_file.write("".join(f"{k}={v}\n" for k, v in compose_env(DEPLOY).items()))
        env_file.flush()
        out = subprocess.run(
            [tool("compose", "docker-compose"), "--env-file", env_file.name,
             "-f", str(DEPLOY / "compose" / "compose.yaml"), "config"],
            capture_output=True, text=True, check=True, timeout=120,
        )  # fmt: skip
    return dict(yaml.safe_load(out.stdout))


def server_container(kustomization: str) -> dict[str, Any]:
    deployment = one(kustomization, "Deployment", "langgraph-server")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)
