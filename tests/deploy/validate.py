"""Validate every asset under ``deploy/`` with the tool that reads it.

    scripts/validate-deploy                    # every check
    scripts/validate-deploy haproxy kubernetes # some of them
    scripts/validate-deploy --root DIR         # another copy of deploy/ (the tests' broken ones)

Each check runs the real tool and fails on its errors and on its warnings: ``haproxy -c``,
``nginx -t``, ``kubectl kustomize`` into ``kubernetes-validate --strict`` and
``check-jsonschema`` (for the CRDs it has no schema for), ``promtool check config``/``check
rules``/``test rules``, ``hadolint``, ``shellcheck``, ``docker-compose config`` and
``yamllint``. The Debian tools come from ``scripts/install-deploy-tools``, the Python ones from
the test extra (``scripts/setup``). The test suite (``tests/deploy/test_validators.py``) runs
every check on the assets and on deliberately broken copies.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.assets import (
    DEPLOY,
    REPO,
    adapter_expressions,
    dashboard_expressions,
    load_yaml,
)

KUBERNETES_VERSION = "1.32.0"
"""The Kubernetes API the manifests are validated against: the version of the ``kubectl`` on
the development machines, and one whose schemas ``kubernetes-validate`` ships (offline)."""

KUSTOMIZATIONS = ("kubernetes/base", "kubernetes/overlays/us-east", "kubernetes/overlays/us-west")

CRD_SCHEMAS = {
    ("autoscaling.k8s.io/v1", "VerticalPodAutoscaler"): (
        "verticalpodautoscaler-autoscaling.k8s.io-v1.json"
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
}
"""Kinds kubernetes-validate has no schema for (CRDs), and the schema in
``deploy/kubernetes/schemas/`` each is checked against instead. Any other kind it cannot
check is an error: a typo in an ``apiVersion`` must not pass as "unknown"."""

# Placeholder credentials: the HAProxy config refuses to load without them, as it should.
_HAPROXY_ENV = {"LGR_STATS_USER": "validate", "LGR_STATS_PASSWORD": "validate"}
_NO_SCHEMA = re.compile(r"Couldn't find schema for kind (\S+) with api version (\S+) ")


class CheckFailed(Exception):
    """A validator rejected an asset (or could not run): the command and what it printed."""

    def __init__(self, check: str, command: str, output: str) -> None:
        super().__init__(f"{check}: {command}\n{output}")
        self.check = check
        self.command = command
        self.output = output


def tool(check: str, name: str) -> str:
    """The path of a validator: the virtualenv's own first (Python tools), then PATH and the
    sbin directories (haproxy and nginx live in /usr/sbin)."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if found is None:
        where = (
            "it comes with the development machines' image"
            if name == "kubectl"
            else "run scripts/install-deploy-tools and scripts/setup"
        )
        raise CheckFailed(check, name, f"{name} is not installed: {where}")
    return found


def _run(
    check: str, command: list[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """Run a validator; its output (stdout and stderr), or CheckFailed if it exited non-zero."""
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env={**os.environ, **env} if env is not None else None,
        check=False,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise CheckFailed(check, " ".join(command), output)
    return output


@contextmanager
def _scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lgr-validate-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------ the checks


def check_haproxy(root: Path) -> str:
    """``haproxy -c`` in zero-warning mode (-dW): a warning, such as a missing timeout, fails.
    Twice: as is, and with the optional runtime API socket (LGR_ADMIN_SOCKET) configured."""
    cfg = root / "haproxy" / "haproxy.cfg"
    command = [tool("haproxy", "haproxy"), "-dW", "-c", "-f", str(cfg)]
    _run("haproxy", command, env=_HAPROXY_ENV)
    with _scratch() as scratch:
        _run("haproxy", command, env={**_HAPROXY_ENV, "LGR_ADMIN_SOCKET": f"{scratch}/admin.sock"})
    return str(cfg)


def check_nginx(root: Path) -> str:
    """``nginx -t`` with a private prefix and a throwaway self-signed certificate, so that no
    system path is read or written; a ``[warn]`` fails too."""
    nginx = tool("nginx", "nginx")
    with _scratch() as prefix:
        conf = prefix / "conf"
        shutil.copytree(root / "nginx", conf)
        (conf / "certs").mkdir()
        _run(
            "nginx",
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
             "-keyout", str(conf / "certs" / "tls.key"), "-out", str(conf / "certs" / "tls.crt")],
        )  # fmt: skip
        command = [nginx, "-t", "-p", f"{prefix}/", "-c", str(conf / "nginx.conf"), "-e", "stderr"]
        output = _run("nginx", command)
        if "[warn]" in output:
            raise CheckFailed("nginx", " ".join(command), output)
    return str(root / "nginx" / "nginx.conf")


def _render(root: Path, kustomization: str) -> list[dict[str, Any]]:
    output = subprocess.run(
        [tool("kubernetes", "kubectl"), "kustomize", str(root / kustomization)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if output.returncode != 0:
        raise CheckFailed("kubernetes", f"kubectl kustomize {kustomization}", output.stderr)
    return [doc for doc in yaml.safe_load_all(output.stdout) if doc]


def check_kubernetes(root: Path) -> str:
    """Each kustomization rendered by ``kubectl kustomize`` and validated offline by
    ``kubernetes-validate --strict`` (unknown fields are errors); the CRDs it has no schema
    for are checked by ``check-jsonschema`` against ``deploy/kubernetes/schemas/``."""
    schemas = root / "kubernetes" / "schemas"
    _run(
        "kubernetes",
        [tool("kubernetes", "check-jsonschema"), "--check-metaschema",
         *sorted(str(p) for p in schemas.glob("*.json"))],
    )  # fmt: skip
    counts = []
    with _scratch() as scratch:
        for kustomization in KUSTOMIZATIONS:
            docs = _render(root, kustomization)
            rendered = scratch / f"{kustomization.replace('/', '_')}.yaml"
            rendered.write_text(yaml.safe_dump_all(docs))
            command = [
                tool("kubernetes", "kubernetes-validate"), "--strict", "--quiet",
                "-k", KUBERNETES_VERSION, str(rendered),
            ]  # fmt: skip
            output = _run("kubernetes", command)
            for kind, api_version in _NO_SCHEMA.findall(output):
                if (api_version, kind) not in CRD_SCHEMAS:
                    raise CheckFailed(
                        "kubernetes", " ".join(command),
                        f"{kustomization}: no schema for {api_version} {kind} (a typo in "
                        f"apiVersion or kind?), and none in deploy/kubernetes/schemas/\n{output}",
                    )  # fmt: skip
            for (api_version, kind), schema in CRD_SCHEMAS.items():
                custom = [d for d in docs if (d["apiVersion"], d["kind"]) == (api_version, kind)]
                files = []
                for i, doc in enumerate(custom):
                    path = scratch / f"{rendered.stem}-{kind}-{i}.json"
                    path.write_text(json.dumps(doc))
                    files.append(str(path))
                if files:
                    _run(
                        "kubernetes",
                        [tool("kubernetes", "check-jsonschema"),
                         "--schemafile", str(schemas / schema), *files],
                    )  # fmt: skip
            counts.append(f"{kustomization} ({len(docs)} resources)")
    return ", ".join(counts)


def alerts_without_tests(root: Path) -> list[str]:
    """Alerts of rules.yml with no test in rules.test.yml that expects them to fire."""
    alerts = [
        rule["alert"]
        for group in load_yaml(root / "prometheus" / "rules.yml")["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    firing = {
        case["alertname"]
        for test in load_yaml(root / "prometheus" / "rules.test.yml")["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    return [alert for alert in alerts if alert not in firing]


def check_prometheus(root: Path) -> str:
    """``promtool check config`` (which checks rules.yml too), ``check rules`` and ``test
    rules``; and every alert has a unit test in which it fires."""
    promtool = tool("prometheus", "promtool")
    prom = root / "prometheus"
    untested = alerts_without_tests(root)
    if untested:
        raise CheckFailed(
            "prometheus", "rules.test.yml", f"alerts with no firing test: {', '.join(untested)}"
        )
    _run("prometheus", [promtool, "check", "config", str(prom / "prometheus.yml")])
    _run("prometheus", [promtool, "check", "rules", str(prom / "rules.yml")])
    _run("prometheus", [promtool, "test", "rules", str(prom / "rules.test.yml")])
    return str(prom)


def check_promql(root: Path) -> str:
    """Every query of the Grafana dashboard and of the Prometheus adapter rule parsed by
    promtool: they are written as recording rules of a scratch rule file for ``promtool check
    rules`` (template variables replaced by values of their kind)."""
    try:
        expressions = [*dashboard_expressions(root), *adapter_expressions(root)]
    except (ValueError, KeyError, TypeError) as error:  # bad JSON or a panel without a query
        raise CheckFailed(
            "promql", "read dashboard.json and the adapter config", repr(error)
        ) from error
    rules = [{"record": f"validate:query_{i}", "expr": e.promql} for i, e in enumerate(expressions)]
    with _scratch() as scratch:
        path = scratch / "queries.rules.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
        try:
            _run("promql", [tool("promql", "promtool"), "check", "rules", str(path)])
        except CheckFailed as failed:
            index = {f"query_{i}": e.where for i, e in enumerate(expressions)}
            raise CheckFailed(
                "promql", failed.command, f"{failed.output}\nqueries: {index}"
            ) from None
    return f"{len(expressions)} queries"


def check_dockerfile(root: Path) -> str:
    """``hadolint``: any finding, down to style, fails."""
    dockerfile = root / "docker" / "Dockerfile"
    _run("dockerfile", [tool("dockerfile", "hadolint"), str(dockerfile)])
    return str(dockerfile)


def check_shell(root: Path) -> str:
    """``shellcheck`` on every shell script of the assets and on the two scripts that
    install and run these checks."""
    scripts = [
        *sorted(root.rglob("*.sh")),
        REPO / "scripts" / "validate-deploy",
        REPO / "scripts" / "install-deploy-tools",
    ]
    _run("shell", [tool("shell", "shellcheck"), *map(str, scripts)])
    return f"{len(scripts)} scripts"


def compose_env(root: Path) -> dict[str, str]:
    """A value for every variable ``compose/env.example`` lists, each random and different,
    as an operator's .env would have. env.example itself must hold no value (no committed
    secret)."""
    values = {}
    for line in (root / "compose" / "env.example").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or value.strip():
            raise CheckFailed("compose", "env.example", f"a value is committed: {line!r}")
        values[name.strip()] = secrets.token_hex(12)
    return values


def check_compose(root: Path) -> str:
    """``docker-compose config`` with an env file made from env.example: every variable the
    stack needs must be listed there, and the file must render."""
    compose = root / "compose" / "compose.yaml"
    with _scratch() as scratch:
        env_file = scratch / "env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in compose_env(root).items()))
        _run(
            "compose",
            [tool("compose", "docker-compose"), "--env-file", str(env_file), "-f", str(compose),
             "config", "--quiet"],
        )  # fmt: skip
    return str(compose)


def check_yaml(root: Path) -> str:
    """``yamllint --strict`` (warnings fail) on every YAML file, with deploy/.yamllint.yaml."""
    _run(
        "yaml",
        [tool("yaml", "yamllint"), "--strict", "-c", str(root / ".yamllint.yaml"), str(root)],
    )
    return str(root)


CHECKS: dict[str, Callable[[Path], str]] = {
    "haproxy": check_haproxy,
    "nginx": check_nginx,
    "kubernetes": check_kubernetes,
    "prometheus": check_prometheus,
    "promql": check_promql,
    "dockerfile": check_dockerfile,
    "shell": check_shell,
    "compose": check_compose,
    "yaml": check_yaml,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="*", help=f"some of {', '.join(CHECKS)}; default: all")
    parser.add_argument("--root", type=Path, default=DEPLOY, help="the deploy/ tree to check")
    args = parser.parse_args(argv)
    unknown = [name for name in args.checks if name not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    names = args.checks or list(CHECKS)
    failed = 0
    for name in names:
        try:
            summary = CHECKS[name](args.root.resolve())
        except CheckFailed as error:
            failed += 1
            print(f"FAIL {name}: {error.command}\n{error.output.rstrip()}\n")
        else:
            print(f"ok   {name}: {summary}")
    print(f"{len(names) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
