"""Where the deploy assets are, and the PromQL expressions they hold.

Shared by the validators (``validate.py``, which parses every expression with promtool) and the
metric name list (``metric_names.py``, which checks every metric they name is exported).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# Grafana's and the Prometheus adapter's template variables, replaced by values of the right
# kind so that promtool can parse the expressions around them.
_GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${datasource}": "prometheus",
    "$job": ".*",
}
_ADAPTER_VARIABLES = {
    "<<.Series>>": "langgraph_requests_total",
    "<<.LabelMatchers>>": 'namespace="langgraph"',
    "<<.GroupBy>>": "pod",
}


@dataclass(frozen=True)
class Expression:
    """One PromQL expression of an asset: ``where`` says which file and which rule or panel."""

    where: str
    promql: str


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _substitute(text: str, variables: dict[str, str]) -> str:
    for name, value in variables.items():
        text = text.replace(name, value)
    return text


def rule_expressions(deploy: Path = DEPLOY) -> list[Expression]:
    """Every ``expr`` of ``prometheus/rules.yml`` (recording rules and alerts)."""
    expressions = []
    for group in load_yaml(deploy / "prometheus" / "rules.yml")["groups"]:
        for rule in group["rules"]:
            name = rule.get("record") or rule.get("alert")
            expressions.append(Expression(f"rules.yml {name}", str(rule["expr"])))
    return expressions


def dashboard_expressions(deploy: Path = DEPLOY) -> list[Expression]:
    """Every panel query of ``grafana/dashboard.json``, template variables substituted."""
    dashboard = json.loads((deploy / "grafana" / "dashboard.json").read_text())
    expressions = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            promql = _substitute(target["expr"], _GRAFANA_VARIABLES)
            where = f"dashboard.json panel {panel['id']} ({panel['title']}) {target['refId']}"
            expressions.append(Expression(where, promql))
    return expressions


def dashboard_variable_queries(deploy: Path = DEPLOY) -> list[Expression]:
    """The dashboard's template variable queries (``label_values(metric, label)``)."""
    dashboard = json.loads((deploy / "grafana" / "dashboard.json").read_text())
    return [
        Expression(f"dashboard.json variable {v['name']}", str(v["definition"]))
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]


def adapter_expressions(deploy: Path = DEPLOY) -> list[Expression]:
    """The Prometheus adapter's series and metrics queries, template variables substituted."""
    config = load_yaml(deploy / "kubernetes" / "prometheus-adapter" / "config.yaml")
    expressions = []
    for i, rule in enumerate(config["rules"]):
        for key in ("seriesQuery", "metricsQuery"):
            promql = _substitute(rule[key], _ADAPTER_VARIABLES)
            expressions.append(Expression(f"prometheus-adapter rule {i} {key}", promql))
    return expressions


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def names_in(promql: str) -> set[str]:
    """The metric and recording rule names an expression reads.

    Label values (quoted strings) are left out; of the identifiers, those that start with
    ``langgraph_`` are metrics and those with a colon are recording rules (the naming rule
    ``level:metric:operations``). PromQL keywords and functions are neither.
    """
    bare = _QUOTED.sub('""', promql)
    return {
        token
        for token in _IDENTIFIER.findall(bare)
        if token.startswith("langgraph_") or ":" in token
    }
