"""deploy/: what can be checked without a Docker engine. The Dockerfile by hadolint, the
compose file by the Compose Specification's loader, the systemd unit by systemd-analyze, and
the dashboard and alerts against the metrics the services export (docs/operations.md)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from infra.adapters import metrics
from infra.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
METRICS_PORT = "9100"


def tool(name: str) -> str:
    """A checking tool `make install` put in the virtualenv, or one on the PATH."""
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed here (make install builds or installs it)")
    return str(found)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_the_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [tool("hadolint"), str(DEPLOY / "Dockerfile")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""


def test_the_image_runs_as_a_user_of_its_own() -> None:
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    stages = [line for line in lines if line.startswith("FROM ")]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert len(stages) == 2  # build, then the virtualenv alone
    assert users[-1:] == ["10001:10001"]
    assert lines.index(f"USER {users[-1]}") > lines.index(stages[-1])


def test_the_compose_file_is_valid_by_the_compose_specification() -> None:
    # Its loader's command does not pass the environment on to interpolation (compose-go
    # 2.16.2's cmd/main.go loads the model without it): the file is checked as written,
    # `${POSTGRES_PASSWORD:?...}` and all, against the specification's schema.
    done = subprocess.run(
        [tool("compose-spec"), "--no-interpolation", "--format", "json", "compose.yaml"],
        capture_output=True,
        text=True,
        cwd=DEPLOY,
    )
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)
    assert model["services"]["kafka"]["image"] == "apache/kafka:4.3.1"
    assert model["services"]["postgres"]["image"] == "postgres:17"


def test_the_compose_file_names_only_declared_volumes_and_required_secrets() -> None:
    loaded = compose()
    declared = set(loaded["volumes"])
    for name, service in loaded["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in declared, f"{name} uses the undeclared volume {source}"
            else:
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which is not there"
    text = (DEPLOY / "compose.yaml").read_text()
    for secret in ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert f"${{{secret}:?" in text  # compose refuses to start without it


def test_compose_runs_every_service_with_a_metrics_port_prometheus_scrapes() -> None:
    services = compose()["services"]
    for name in SERVICES:
        service = services[name]
        assert service["command"][0] == name
        assert service["environment"]["GROUPBUY_METRICS_PORT"] == METRICS_PORT
        assert service["image"] == services["serve"]["image"]
    assert services["serve"]["command"][:1] == ["serve"]
    scraped = {
        target
        for job in yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())[
            "scrape_configs"
        ]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    assert scraped == {f"{name}:{METRICS_PORT}" for name in SERVICES} | {"serve:8080"}


def exported() -> set[str]:
    """Every sample name the services' metrics can have, and the client's process_* ones."""
    names = {"up"}  # Prometheus's own, per target
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def named_in(expression: str) -> set[str]:
    """The metric names in a PromQL expression."""
    return set(re.findall(r"\b(?:groupbuy|process)_[a-z_]+\b|\bup(?=\{)", expression))


def test_every_metric_the_dashboard_and_alerts_use_is_exported() -> None:
    assert metrics.ORDERS is not None  # the services' metrics are registered
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "groupbuy.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    expressions += [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    used = set().union(*(named_in(expression) for expression in expressions))
    assert used - exported() == set()
    # Each metric of the contract's table is on the dashboard.
    groupbuy = {name for name in exported() if name.startswith("groupbuy_")}
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    missing = {name for name in groupbuy if re.sub(r"_(bucket|sum|count)$", "", name) not in shown}
    assert missing == set()


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    unit = (DEPLOY / "systemd" / "groupbuy@.service").read_text()
    assert "ExecStart=/opt/groupbuy/bin/groupbuy %i $GROUPBUY_ARGS" in unit
    # systemd-analyze checks that the program exists: the one installed here stands in.
    (tmp_path / "groupbuy@.service").write_text(
        unit.replace("/opt/groupbuy/bin/groupbuy", str(BIN / "groupbuy"))
    )
    for instance in [*SERVICES, "serve"]:
        (tmp_path / f"groupbuy@{instance}.service").symlink_to("groupbuy@.service")
        done = subprocess.run(
            [analyze, "verify", "--man=no", str(tmp_path / f"groupbuy@{instance}.service")],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr  # an unknown key is only a warning
