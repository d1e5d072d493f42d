"""Checks on docker-compose.yml (as `docker-compose config` renders it) that
compose itself does not make: every QapMap process verifies bearer tokens
with a JWKS on a mounted volume, written by the one-shot `jwt-keys` service
before it starts; HS256 is off; the demo knows where its signing key is.

usage: check_compose.py RENDERED_COMPOSE_FILE
"""

import posixpath
import sys

import yaml

PROCESSES = ("equity", "shareholder", "ledger", "orchestrator")


def main() -> int:
    with open(sys.argv[1]) as handle:
        services = yaml.safe_load(handle)["services"]
    problems = []
    for name in PROCESSES:
        service = services[name]
        env = service.get("environment") or {}
        jwks = env.get("QAPMAP_JWT_JWKS_FILE") or ""
        targets = [
            volume.split(":")[1]
            for volume in service.get("volumes") or []
            if isinstance(volume, str) and ":" in volume
        ]
        if not jwks or posixpath.dirname(jwks) not in targets:
            problems.append(f"{name}: QAPMAP_JWT_JWKS_FILE={jwks!r} is not on a mounted volume")
        if str(env.get("QAPMAP_JWT_ALLOW_HS256", "false")).lower() == "true":
            problems.append(f"{name}: HS256 tokens enabled")
        if "QAPMAP_JWT_PUBLIC_KEYS" in env:
            problems.append(f"{name}: QAPMAP_JWT_PUBLIC_KEYS is read by no process")
        condition = (service.get("depends_on") or {}).get("jwt-keys", {}).get("condition")
        if condition != "service_completed_successfully":
            problems.append(f"{name}: does not wait for jwt-keys to complete")
    if not (services.get("demo", {}).get("environment") or {}).get("QAPMAP_DEMO_KEY_DIR"):
        problems.append("demo: QAPMAP_DEMO_KEY_DIR is not set")
    for problem in problems:
        print(f"  FAIL {problem}")
    print(f"compose checks: {len(PROCESSES)} processes, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
