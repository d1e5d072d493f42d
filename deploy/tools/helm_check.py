"""`helm lint` and `helm template` for helm/qapmap without the helm CLI.

The helm CLI is not packaged in Debian, PyPI or npm. helm-python-sdk (PyPI)
binds Helm's own Go SDK (lint and the template engine) through ctypes, so
this is Helm's code doing the linting and rendering, driven from Python.

usage: helm_check.py CHART OUT_DIR [--common JSON_VALUES] [NAME=JSON_VALUES ...]
                     [!NAME=JSON_VALUES ...]
Lints the chart (info findings are printed, warnings and errors fail), then
renders it once per NAME (default values first, as "default", unless a NAME
default is given) into OUT_DIR/NAME.yaml, NOTES.txt excluded. --common
values are merged under every NAME's (the chart's required values). A
!NAME must fail to render (without the common values): the chart refuses it.
"""

import json
import sys
from pathlib import Path

import helm_python as helm

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def main() -> int:
    chart, out_dir, *variants = sys.argv[1:]
    common = {}
    if variants[:1] == ["--common"]:
        common = json.loads(variants[1])
        variants = variants[2:]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk, libhelm_c {helm.helm_c_version()})")

    renders = {"default": {}}
    refusals = {}
    for variant in variants:
        name, _, values = variant.partition("=")
        if name.startswith("!"):
            refusals[name[1:]] = json.loads(values)
        else:
            renders[name] = json.loads(values)

    failed = False
    for name, values in refusals.items():
        try:
            with helm.Chart.load(chart) as loaded:
                loaded.render(values, name="qapmap", namespace="qapmap")
        except helm.HelmRenderError as error:
            print(f"helm template ({name} values): refused as it must be: {str(error).split('): ', 1)[-1]}")
        else:
            print(f"helm template ({name} values): FAILED: rendered, but the chart must refuse these values")
            failed = True

    for name, own in renders.items():
        values = merge(common, own)
        report = helm.lint(chart, values=values or None, strict=True, kube_version="1.30.0")
        for message in report.get("messages") or []:
            severity = SEVERITY.get(message.get("severity"), str(message.get("severity")))
            print(f"  lint [{name}] {severity}: {message.get('path')}: {message.get('error')}")
            if message.get("severity", 0) >= 2:
                failed = True
        for error in report.get("errors") or []:
            print(f"  lint [{name}] ERROR: {error}")
            failed = True
        print(f"helm lint --strict ({name} values): {'FAILED' if failed else 'ok'}")

        with helm.Chart.load(chart) as loaded:
            manifests = loaded.render(values, name="qapmap", namespace="qapmap")
        documents = [
            text.strip()
            for path, text in sorted(manifests.items())
            if not path.endswith("NOTES.txt") and text.strip()
        ]
        target = out / f"{name}.yaml"
        target.write_text("\n---\n".join(documents) + "\n")
        print(f"helm template ({name} values): {len(manifests)} templates -> {target}")
    return 1 if failed else 0


def merge(base: dict, override: dict) -> dict:
    """`override` deep-merged over `base`, as Helm merges values files."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


if __name__ == "__main__":
    sys.exit(main())
