"""What the deploy assets promise their operator, read from the assets as their tools render
them (kubectl kustomize, docker-compose config): the faults of the seed chapter are absent,
and the numbers that must agree across files (drain grace, termination grace, probes) agree.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.assets import DEPLOY, load_yaml
from tests.deploy.rendered import compose, one, rendered, server_container
from tests.deploy.validate import KUSTOMIZATIONS

DRAIN_GRACE_S = 30
"""The server's default --drain-grace-s (issue 13), which every stop timeout must exceed."""


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_no_secret_values_and_no_floating_images(kustomization: str) -> None:
    docs = rendered(kustomization)
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets are referenced, never shipped"
    text = yaml.safe_dump_all(docs)
    assert not re.search(r"postgres(ql)?://[^@\s]*:[^@\s]*@", text), "a password in a URL"
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            image = container["image"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest")
            for env in container.get("env", []):
                name = env["name"]
                if re.search("PASSWORD|SECRET|KEYS?$|REDIS_URL", name) and not name.endswith(
                    "_FILE"
                ):
                    assert "valueFrom" in env and "value" not in env, name


def test_deployment_drains_before_it_is_killed() -> None:
    deployment = one("kubernetes/overlays/us-east", "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = server_container("kubernetes/overlays/us-east")
    args = container["args"]
    drain = int(args[args.index("--drain-grace-s") + 1])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_pods_run_unprivileged_and_spread() -> None:
    pod = one("kubernetes/overlays/us-east", "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = server_container("kubernetes/overlays/us-east")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    zones = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    values = zones["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
    assert values == ["us-east-1a", "us-east-1b", "us-east-1c"]


def test_hpa_scales_on_cpu_memory_and_requests_with_the_seed_behaviour() -> None:
    hpa = one("kubernetes/overlays/us-east", "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    metrics = hpa["spec"]["metrics"]
    assert {m["resource"]["name"] for m in metrics if m["type"] == "Resource"} == {"cpu", "memory"}
    (pods,) = [m for m in metrics if m["type"] == "Pods"]
    assert pods["pods"]["metric"]["name"] == "langgraph_requests_per_second"
    adapter = load_yaml(DEPLOY / "kubernetes" / "prometheus-adapter" / "config.yaml")
    assert adapter["rules"][0]["name"]["as"] == "langgraph_requests_per_second"
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 120
    assert {(p["type"], p["value"]) for p in behavior["scaleUp"]["policies"]} == {
        ("Percent", 100),
        ("Pods", 4),
    }
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert behavior["scaleDown"]["policies"] == [
        {"type": "Percent", "value": 10, "periodSeconds": 60}
    ]


def test_vpa_only_recommends_so_it_does_not_fight_the_hpa() -> None:
    vpa = one("kubernetes/overlays/us-east", "VerticalPodAutoscaler")
    assert vpa["spec"]["updatePolicy"]["updateMode"] == "Off"


def test_regions_primary_migrates_standby_waits_at_zero() -> None:
    east = rendered("kubernetes/overlays/us-east")
    west = rendered("kubernetes/overlays/us-west")
    assert [d["kind"] for d in east].count("Job") == 1
    assert "Job" not in [d["kind"] for d in west], "a read-only replica cannot be migrated"
    assert one("kubernetes/overlays/us-west", "Deployment")["spec"]["replicas"] == 0
    for docs, region in ((east, "us-east-1"), (west, "us-west-2")):
        for doc in docs:
            assert doc["metadata"]["labels"]["langgraph-resilient/region"] == region
    urls = [
        one(k, "ConfigMap")["data"]["LANGGRAPH_RESILIENT_POSTGRES_URL"]
        for k in ("kubernetes/overlays/us-east", "kubernetes/overlays/us-west")
    ]
    assert "primary.us-east-1" in urls[0] and "replica.us-west-2" in urls[1]
    job = one("kubernetes/overlays/us-east", "Job")
    # The first step of a rollout (kubectl apply -l) must take the Job with what it needs.
    step_one = [
        d["kind"]
        for d in east
        if d["metadata"]["labels"].get("langgraph-resilient/before-rollout") == "true"
    ]
    assert sorted(step_one) == ["ConfigMap", "Job", "Namespace"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


def test_haproxy_checks_readiness_fast_and_retries_only_unsent_requests() -> None:
    cfg = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    lines = [line.split("#")[0].strip() for line in cfg.splitlines()]
    assert "option httpchk GET /ready HTTP/1.1" in lines
    assert "retry-on conn-failure" in lines
    assert "option redispatch 1" in lines
    (default_server,) = [line for line in lines if line.startswith("default-server")]
    settings = default_server.split()
    inter = float(settings[settings.index("inter") + 1].removesuffix("s"))
    fall = int(settings[settings.index("fall") + 1])
    assert inter * fall <= 3, "a dead replica is marked down within seconds"
    assert 'stats auth "${LGR_STATS_USER}:${LGR_STATS_PASSWORD}"' in lines
    assert "admin123" not in cfg
    assert "prometheus-exporter" in cfg


def test_compose_stack() -> None:
    services = compose()["services"]
    servers = [name for name in services if name.startswith("server-")]
    assert len(servers) == 3
    for name in [*servers, "migrate"]:
        service = services[name]
        assert service["image"] == "langgraph-resilient:0.1.0"
        assert "PGPASSWORD" in service["environment"]
    for name in servers:
        grace = services[name]["stop_grace_period"]
        assert int(grace.removesuffix("s")) > DRAIN_GRACE_S
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    haproxy_env = services["haproxy"]["environment"]
    assert [haproxy_env[f"LGR_REPLICA_{i}"] for i in (1, 2, 3)] == [f"{s}:8000" for s in servers]
    assert len([n for n in services if n.startswith("sentinel-")]) == 3
    assert "--replicaof" in services["redis-replica"]["command"]
    assert services["postgres-standby"]["depends_on"]["postgres-primary"]["condition"] == (
        "service_healthy"
    )
    for service in services.values():
        for port in service.get("ports", []):
            # docker-compose v1 renders "ip:host:container", v2 a mapping.
            host_ip = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
            assert host_ip == "127.0.0.1", port
        assert not service["image"].endswith(":latest")


def test_the_dockerfile_runs_the_server_unprivileged_with_a_health_check() -> None:
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r"^USER 10001", dockerfile, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*127\.0\.0\.1:8000/health", dockerfile, re.M)
    assert re.search(r'^ENTRYPOINT \["langgraph-resilient"\]', dockerfile, re.M)
    assert len(re.findall(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)) == 2
    ignore = (DEPLOY.parent / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*", ".dockerignore excludes everything, then lets the package in"


def test_redis_is_not_backed_up() -> None:
    script = (DEPLOY / "backup" / "backup-restore.sh").read_text()
    assert "redis-cli" not in script and "--rdb" not in script


def test_the_readme_names_every_asset_and_check() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in sorted(DEPLOY.iterdir()):
        if path.is_dir():
            assert f"`{path.name}/" in readme, f"deploy/README.md does not describe {path.name}/"
    from tests.deploy.validate import CHECKS

    for check in CHECKS:
        assert check in readme.split("## What is here")[0], f"check {check} not in the usage"
