"""Checks on rendered manifests that schemas cannot express.

usage: check_manifests.py FILE...
For every Deployment (app.kubernetes.io/part-of: qapmap) it checks: runs as
non-root with a read-only root filesystem; memory request <= 64Mi and limit
<= 128Mi; liveness, readiness and startup probes are native gRPC probes on the
container's port; a preStop pause exists; terminationGracePeriodSeconds is
above QAPMAP_SHUTDOWN_GRACE_MS plus that pause; the process is told its port;
its database URL comes from a Secret; QAPMAP_JWT_JWKS_FILE is set and its
directory is a Secret volume mounted without subPath (so a rotated key set
reaches the process), and so is the NATS credentials file's when set; HS256
and the obsolete QAPMAP_JWT_PUBLIC_KEYS appear nowhere. And that every such
Deployment has a Service and a PDB, an HPA unless it sets replicas, and that
a NetworkPolicy admits its port.
"""

import posixpath
import sys

import yaml

MI = 1024 * 1024


def quantity(text: str) -> int:
    units = {"Ki": 1024, "Mi": MI, "Gi": 1024 * MI}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def main() -> int:
    docs = []
    for path in sys.argv[1:]:
        with open(path) as handle:
            docs += [d for d in yaml.safe_load_all(handle) if d]
    by_kind: dict[str, list] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    config = {}
    for cm in by_kind.get("ConfigMap", []):
        config.update(cm.get("data") or {})

    problems = []
    deployments = [
        d for d in by_kind.get("Deployment", [])
        if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/part-of") == "qapmap"
    ]
    if len(deployments) != 4:
        problems.append(f"expected 4 QapMap Deployments, found {len(deployments)}")
    policy_ports = {
        port["port"]
        for np in by_kind.get("NetworkPolicy", [])
        for rule in np["spec"].get("ingress", [])
        for port in rule.get("ports", [])
    }
    grace_ms = int(config.get("QAPMAP_SHUTDOWN_GRACE_MS", "10000"))
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        port = container["ports"][0]["containerPort"]

        def need(ok, what):
            if not ok:
                problems.append(f"{name}: {what}")

        need(pod["securityContext"].get("runAsNonRoot") is True, "runAsNonRoot is not true")
        need(container["securityContext"].get("readOnlyRootFilesystem") is True, "root filesystem is writable")
        need(quantity(container["resources"]["requests"]["memory"]) <= 64 * MI, "memory request above 64Mi")
        need(quantity(container["resources"]["limits"]["memory"]) <= 128 * MI, "memory limit above 128Mi")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            need(container.get(probe, {}).get("grpc", {}).get("port") == port, f"{probe} is not gRPC on {port}")
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        need(len(pre_stop) == 2 and pre_stop[0] == "sleep", "no preStop sleep")
        pause_ms = int(pre_stop[1]) * 1000 if len(pre_stop) == 2 else 0
        need(pod["terminationGracePeriodSeconds"] * 1000 > grace_ms + pause_ms,
             "terminationGracePeriodSeconds not above shutdown grace + preStop pause")
        env = {e["name"]: e for e in container.get("env", [])}
        need(env.get("QAPMAP_GRPC_PORT", {}).get("value") == str(port), "QAPMAP_GRPC_PORT does not match the port")
        need("secretKeyRef" in env.get("QAPMAP_DATABASE_URL", {}).get("valueFrom", {}), "database URL not from a Secret")
        need(any(i["name"] == "wait-for-postgres" for i in pod.get("initContainers", [])), "no wait-for-postgres")
        settings = dict(config)
        settings.update({e["name"]: e.get("value") for e in container.get("env", []) if "value" in e})
        need("QAPMAP_JWT_PUBLIC_KEYS" not in settings and "QAPMAP_JWT_PUBLIC_KEYS" not in env,
             "sets QAPMAP_JWT_PUBLIC_KEYS, which no process reads (QAPMAP_JWT_JWKS_FILE is the variable)")
        need(str(settings.get("QAPMAP_JWT_ALLOW_HS256", "false")).lower() != "true"
             and "QAPMAP_JWT_HS256_SECRET" not in settings and "QAPMAP_JWT_HS256_SECRET" not in env,
             "enables HS256 tokens, which are for local development only")
        secret_dirs = {
            volume["name"]: volume["secret"]
            for volume in pod.get("volumes", [])
            if "secret" in volume
        }
        mounts = container.get("volumeMounts", [])

        def secret_file(variable, what, required):
            path = settings.get(variable) or ""
            if not path:
                need(not required, f"{variable} is not set: {what}")
                return
            directory = posixpath.dirname(path)
            mount = next((m for m in mounts if m["mountPath"] == directory), None)
            need(mount is not None and mount["name"] in secret_dirs,
                 f"{variable}={path}: no Secret volume mounted at {directory}")
            if mount is not None:
                need("subPath" not in mount, f"{variable}: mounted with subPath, so updates never arrive")
                need(mount.get("readOnly") is True, f"{variable}: the mount is not read-only")

        secret_file("QAPMAP_JWT_JWKS_FILE", "the processes refuse to start without a JWKS", True)
        secret_file("QAPMAP_NATS_CREDENTIALS_FILE", "", False)
        # Without a replica count the Deployment relies on its HPA.
        kinds = ["Service", "PodDisruptionBudget"]
        if "replicas" not in deployment["spec"]:
            kinds.append("HorizontalPodAutoscaler")
        for kind in kinds:
            need(any(o["metadata"]["name"] == name for o in by_kind.get(kind, [])), f"no {kind}")
        need(port in policy_ports, f"no NetworkPolicy admits port {port}")

    for problem in problems:
        print(f"  FAIL {problem}")
    print(f"manifest checks: {len(deployments)} Deployments, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
