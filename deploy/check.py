#!/usr/bin/env python3
"""Checks that the deployment files fit together (run by .ci/run after yamllint and
kubernetes-validate): the compose file's services, nginx's upstreams and the gateway's
configuration agree, and the Kubernetes ConfigMap carries the same configuration as
deploy/gateway.yaml with every variable it names in the Secret. It starts nothing; that the
configuration loads is checked by `cargo test -p brace-gateway` (deploy_config_loads)."""

import re
import sys
from pathlib import Path
from urllib.parse import urlparse

import yaml

HERE = Path(__file__).resolve().parent
errors = []


def check(condition, message):
    if not condition:
        errors.append(message)


gateway = yaml.safe_load((HERE / "gateway.yaml").read_text())
listen_port = int(gateway["listen"].rsplit(":", 1)[1])
env_vars = {p["api_key_env"] for p in gateway["providers"] if p.get("api_key_env")}
env_vars.add(gateway["admin"]["token_env"])
env_vars.add(gateway["state"]["redis_url_env"])

# ----- compose + nginx
compose = yaml.safe_load((HERE / "compose.yaml").read_text())
services = compose["services"]
gateways = sorted(name for name in services if name.startswith("gateway-"))
check(len(gateways) == 3, f"compose: three gateway services, found {gateways}")
check("redis" in services and "nginx" in services, "compose: redis and nginx services")
for name in gateways:
    service = services[name]
    env = service.get("environment", {})
    for var in env_vars:
        check(var in env, f"compose: {name} sets {var}")
    url = urlparse(re.sub(r"\$\{[^}]*\}", "x", env.get("BRACE_REDIS_URL", "")))
    check(url.hostname == "redis", f"compose: {name} reaches Redis at the redis service, not {url.hostname}")
    check("redis" in service.get("depends_on", {}), f"compose: {name} waits for redis")
    mounts = service.get("volumes", [])
    check(any(m.startswith("./gateway.yaml:") for m in mounts), f"compose: {name} mounts gateway.yaml")

nginx = (HERE / "nginx.conf").read_text()
upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", nginx, re.M)
check(sorted(host for host, _ in upstreams) == gateways, f"nginx: upstreams {upstreams} are the gateway services")
check(all(int(port) == listen_port for _, port in upstreams), f"nginx: upstream port is the gateway's {listen_port}")
check("proxy_buffering off" in nginx, "nginx: streams pass through unbuffered")

# ----- Kubernetes
docs = [d for d in yaml.safe_load_all((HERE / "kubernetes.yaml").read_text()) if d]
by_kind = {}
for doc in docs:
    by_kind.setdefault(doc["kind"], []).append(doc)
config_map = by_kind["ConfigMap"][0]
check(yaml.safe_load(config_map["data"]["gateway.yaml"]) == gateway,
      "kubernetes: the ConfigMap's gateway.yaml is deploy/gateway.yaml")
secret = by_kind["Secret"][0]
for var in env_vars:
    check(var in secret["stringData"], f"kubernetes: the Secret holds {var}")
deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
services_k8s = {s["metadata"]["name"]: s for s in by_kind["Service"]}
gw = deployments["brace-gateway"]["spec"]
check(gw["replicas"] >= 2, "kubernetes: the gateway runs replicas")
container = gw["template"]["spec"]["containers"][0]
check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", "kubernetes: readiness probe on /readyz")
check(container["livenessProbe"]["httpGet"]["path"] == "/livez", "kubernetes: liveness probe on /livez")
check(container["ports"][0]["containerPort"] == listen_port, "kubernetes: the container port is the gateway's")
check(any(e.get("secretRef", {}).get("name") == secret["metadata"]["name"] for e in container["envFrom"]),
      "kubernetes: the gateway reads the Secret")
redis_url = urlparse(secret["stringData"]["BRACE_REDIS_URL"])
check(redis_url.hostname in services_k8s, f"kubernetes: Redis host {redis_url.hostname} is a Service")
for name, service in services_k8s.items():
    selector = service["spec"]["selector"]
    check(any(d["spec"]["selector"]["matchLabels"] == selector for d in deployments.values()),
          f"kubernetes: Service {name} selects a Deployment")

if errors:
    print("\n".join(f"deploy: {e}" for e in errors))
    sys.exit(1)
print(f"deploy: compose ({len(services)} services), nginx ({len(upstreams)} upstreams) and "
      f"kubernetes ({len(docs)} objects) fit together")
