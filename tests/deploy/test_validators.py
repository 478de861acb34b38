"""Every deploy asset passes the tool that reads it, and a broken copy of it does not.

Each broken copy is the real ``deploy/`` tree copied to a temporary directory with one
deliberate mistake, of the kind an operator makes when editing the file; the check must fail
and its tool must name the mistake. So no check can pass vacuously.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.assets import DEPLOY
from tests.deploy.validate import CHECKS, CheckFailed


@dataclass(frozen=True)
class Breakage:
    """One mistake: in ``path`` (relative to deploy/), ``old`` becomes ``new``; the check
    must then fail with ``expect`` in its output."""

    check: str
    what: str
    path: str
    old: str
    new: str
    expect: str


BREAKAGES = [
    # HAProxy: an unknown keyword, and (zero-warning mode) a missing timeout.
    Breakage(
        check="haproxy",
        what="misspelled option",
        path="haproxy/haproxy.cfg",
        old="option httpchk GET /ready",
        new="option httpchek GET /ready",
        expect="unknown option 'httpchek'",
    ),
    Breakage(
        check="haproxy",
        what="missing client timeout (a warning)",
        path="haproxy/haproxy.cfg",
        old="    timeout client 15m\n",
        new="",
        expect="missing timeouts",
    ),
    Breakage(
        check="haproxy",
        what="retries on any error",
        path="haproxy/haproxy.cfg",
        old="retry-on conn-failure",
        new="retry-on conn-failure sometimes",
        expect="sometimes",
    ),
    Breakage(
        check="haproxy",
        what="runtime API socket with an unknown level (checked with LGR_ADMIN_SOCKET set)",
        path="haproxy/haproxy.cfg",
        old="mode 600 level admin",
        new="mode 600 level admn",
        expect="'level' only supports",
    ),
    # nginx: the seed's limit_req_zone inside a server block, and a bad value.
    Breakage(
        check="nginx",
        what="limit_req_zone outside http",
        path="nginx/nginx.conf",
        old="        listen 8443 ssl http2;",
        new=(
            "        listen 8443 ssl http2;\n"
            "        limit_req_zone $binary_remote_addr zone=x:1m rate=1r/s;"
        ),
        expect='"limit_req_zone" directive is not allowed here',
    ),
    Breakage(
        check="nginx",
        what="invalid proxy_buffering",
        path="nginx/nginx.conf",
        old="proxy_buffering off;",
        new="proxy_buffering of;",
        expect="invalid value",
    ),
    Breakage(
        check="nginx",
        what="an upstream server with a bad parameter",
        path="nginx/upstream.conf",
        old="server 127.0.0.1:8001 max_fails=2",
        new="server 127.0.0.1:8001 max_fail=2",
        expect='invalid parameter "max_fail=2"',
    ),
    # Kubernetes: a field typo (strict schema), a wrong type, an unknown apiVersion, a broken
    # kustomization, and the two CRDs against their schemas.
    Breakage(
        check="kubernetes",
        what="HPA field typo",
        path="kubernetes/base/hpa.yaml",
        old="averageUtilization: 70",
        new="averageUtilisation: 70",
        expect="'averageUtilisation' was unexpected",
    ),
    Breakage(
        check="kubernetes",
        what="port as a string",
        path="kubernetes/base/deployment.yaml",
        old="containerPort: 8000",
        new='containerPort: "8000"',
        expect="is not of type 'integer'",
    ),
    Breakage(
        check="kubernetes",
        what="apiVersion typo",
        path="kubernetes/base/pdb.yaml",
        old="apiVersion: policy/v1",
        new="apiVersion: policy/v2",
        expect="no schema for policy/v2",
    ),
    Breakage(
        check="kubernetes",
        what="patch file missing",
        path="kubernetes/overlays/us-west/kustomization.yaml",
        old="path: standby.yaml",
        new="path: stanby.yaml",
        expect="stanby.yaml",
    ),
    Breakage(
        check="kubernetes",
        what="VPA update mode unknown",
        path="kubernetes/base/vpa.yaml",
        old='updateMode: "Off"',
        new='updateMode: "Sometimes"',
        expect="'Sometimes' is not one of",
    ),
    Breakage(
        check="kubernetes",
        what="ServiceMonitor interval unparsable",
        path="kubernetes/base/servicemonitor.yaml",
        old="interval: 15s",
        new="interval: 15 seconds",
        expect="does not match",
    ),
    # Prometheus: bad PromQL, an alert whose test no longer holds, a bad config, an untested alert.
    Breakage(
        check="prometheus",
        what="unclosed parenthesis",
        path="prometheus/rules.yml",
        old="sum by (job, endpoint) (rate(langgraph_requests_total[5m]))",
        new="sum by (job, endpoint) (rate(langgraph_requests_total[5m])",
        expect="parse error",
    ),
    Breakage(
        check="prometheus",
        what="threshold changed without its test",
        path="prometheus/rules.yml",
        old="job:langgraph_request_errors:ratio_rate5m > 0.05",
        new="job:langgraph_request_errors:ratio_rate5m > 0.5",
        expect="LangGraphHighErrorRate",
    ),
    Breakage(
        check="prometheus",
        what="bad scrape interval",
        path="prometheus/prometheus.yml",
        old="scrape_interval: 15s",
        new="scrape_interval: 15",
        expect="not a valid duration",
    ),
    Breakage(
        check="prometheus",
        what="alert with no firing test",
        path="prometheus/rules.test.yml",
        old="      - eval_time: 3m\n        alertname: LangGraphLeaseLost",
        new="      - eval_time: 3m\n        alertname: LangGraphLeaseLostt",
        expect="alerts with no firing test: LangGraphLeaseLost",
    ),
    # Dashboard queries: invalid PromQL, and a file that is no longer JSON.
    Breakage(
        check="promql",
        what="dashboard query typo",
        path="grafana/dashboard.json",
        old="histogram_quantile(0.5, sum by (endpoint, le)",
        new="histogram_quantil(0.5, sum by (endpoint, le)",
        expect="unknown function",
    ),
    Breakage(
        check="promql",
        what="dashboard JSON broken",
        path="grafana/dashboard.json",
        old='"refresh": "30s",',
        new='"refresh": "30s",,',
        expect="JSONDecodeError",
    ),
    # Dockerfile: an unpinned base image (the seed's :latest) and an unpinned apt install.
    Breakage(
        check="dockerfile",
        what="latest base image",
        path="docker/Dockerfile",
        old="FROM python:3.11.9-slim-bookworm AS runtime",
        new="FROM python:latest AS runtime",
        expect="DL3007",
    ),
    Breakage(
        check="dockerfile",
        what="apt-get without pinning",
        path="docker/Dockerfile",
        old="WORKDIR /app\n",
        new="WORKDIR /app\nRUN apt-get update && apt-get install -y curl\n",
        expect="DL3008",
    ),
    # Shell: an unquoted expansion.
    Breakage(
        check="shell",
        what="unquoted variable",
        path="backup/backup-restore.sh",
        old='chmod 700 "$to"',
        new="chmod 700 $to",
        expect="SC2086",
    ),
    Breakage(
        check="shell",
        what="unquoted variable in the rolling restart",
        path="haproxy/rolling-restart.sh",
        old='api "set server $backend/$server state drain"',
        new="api set server $backend/$server state drain",
        expect="SC2086",
    ),
    # Compose: an unknown condition, and a variable the stack needs missing from env.example.
    Breakage(
        check="compose",
        what="unknown depends_on condition",
        path="compose/compose.yaml",
        old="condition: service_completed_successfully",
        new="condition: service_finished",
        expect="service_finished",
    ),
    Breakage(
        check="compose",
        what="secret missing from env.example",
        path="compose/env.example",
        old="GRAFANA_ADMIN_PASSWORD=\n",
        new="",
        expect="set GRAFANA_ADMIN_PASSWORD",
    ),
    Breakage(
        check="compose",
        what="secret committed in env.example",
        path="compose/env.example",
        old="REDIS_PASSWORD=\n",
        new="REDIS_PASSWORD=hunter2\n",
        expect="a value is committed",
    ),
    # YAML: a duplicated key and a bad indentation.
    Breakage(
        check="yaml",
        what="duplicated key",
        path="kubernetes/base/servicemonitor.yaml",
        old="      interval: 15s\n",
        new="      interval: 15s\n      interval: 30s\n",
        expect="duplication of key",
    ),
    Breakage(
        check="yaml",
        what="bad indentation",
        path="grafana/provisioning/datasources/prometheus.yaml",
        old="    type: prometheus\n",
        new="     type: prometheus\n",
        expect="syntax error",
    ),
]


def _break(tmp_path: Path, breakage: Breakage) -> Path:
    root = tmp_path / "deploy"
    shutil.copytree(DEPLOY, root)
    target = root / breakage.path
    text = target.read_text()
    assert text.count(breakage.old) == 1, f"{breakage.old!r} must occur once in {breakage.path}"
    target.write_text(text.replace(breakage.old, breakage.new))
    return root


@pytest.mark.parametrize("check", list(CHECKS))
def test_the_assets_pass(check: str) -> None:
    CHECKS[check](DEPLOY)


@pytest.mark.parametrize("breakage", BREAKAGES, ids=[f"{b.check}: {b.what}" for b in BREAKAGES])
def test_a_broken_copy_fails(breakage: Breakage, tmp_path: Path) -> None:
    root = _break(tmp_path, breakage)
    run: Callable[[Path], str] = CHECKS[breakage.check]
    with pytest.raises(CheckFailed) as failed:
        run(root)
    assert breakage.expect in failed.value.output, failed.value.output


def test_every_check_has_a_broken_copy() -> None:
    assert {b.check for b in BREAKAGES} == set(CHECKS)


def test_the_command_validates_everything() -> None:
    """scripts/validate-deploy's entry point, as an operator runs it: all checks, exit 0; and
    exit 1 on a broken tree."""
    from tests.deploy.validate import main

    assert main([]) == 0


def test_the_command_fails_on_a_broken_tree(tmp_path: Path) -> None:
    from tests.deploy.validate import main

    root = _break(tmp_path, BREAKAGES[0])
    assert main(["--root", str(root), "haproxy", "yaml"]) == 1
