"""Rewrite Kueue's webhook and CRD manifests for a Kueue that runs outside the cluster.

Kueue's released manifests point the API server at a Service in front of a Kueue pod. On the
test site Kueue is a plain process on loopback (there is no pod network to reach a Service
through), so each webhook client config becomes a URL on 127.0.0.1 with our CA's bundle.

Only the webhooks of what this Kueue manages are kept: its own kinds and batch/v1 Jobs. The
released set also intercepts pods, Deployments and StatefulSets; with those integrations off,
Kueue serves no handler for them and a fail-closed webhook would refuse every pod in the
cluster. Standard library only: setup.sh runs before any virtual environment exists.

Usage: kueue_manifests.py webhooks|crds URL_BASE CA_FILE < list.json > list.json
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from typing import Any

#: (API group, resource) pairs whose webhooks are kept; "kueue.x-k8s.io" covers all its kinds.
_KEPT_GROUPS = {"kueue.x-k8s.io"}
_KEPT_RESOURCES = {("batch", "jobs")}

#: CRDs that Kueue converts between its API versions (its kustomization's webhook patches).
_CONVERTED_CRDS = {
    "localqueues.kueue.x-k8s.io",
    "clusterqueues.kueue.x-k8s.io",
    "cohorts.kueue.x-k8s.io",
    "workloads.kueue.x-k8s.io",
    "multikueueclusters.kueue.x-k8s.io",
}


def _kept(webhook: dict[str, Any]) -> bool:
    """A webhook is kept when every rule targets a kind this Kueue serves."""
    for rule in webhook.get("rules", []):
        for group in rule.get("apiGroups", []):
            if group in _KEPT_GROUPS:
                continue
            if not all((group, res) in _KEPT_RESOURCES for res in rule.get("resources", [])):
                return False
    return True


def _client_config(path: str, url_base: str, ca_bundle: str) -> dict[str, str]:
    return {"url": url_base.rstrip("/") + path, "caBundle": ca_bundle}


def webhooks(items: list[dict[str, Any]], url_base: str, ca_bundle: str) -> list[dict[str, Any]]:
    """Webhook configurations renamed kueue-*, pointed at URL_BASE, unserved hooks dropped."""
    out = []
    for item in items:
        if item.get("kind") not in (
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ):
            continue
        item["metadata"] = {"name": "kueue-" + item["metadata"]["name"]}
        hooks = [hook for hook in item.get("webhooks", []) if _kept(hook)]
        for hook in hooks:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = _client_config(path, url_base, ca_bundle)
        item["webhooks"] = hooks
        out.append(item)
    return out


def crds(items: list[dict[str, Any]], url_base: str, ca_bundle: str) -> list[dict[str, Any]]:
    """CRDs with the conversion webhook of the converted kinds pointed at URL_BASE."""
    for item in items:
        if item.get("kind") != "CustomResourceDefinition":
            continue
        if item["metadata"]["name"] in _CONVERTED_CRDS:
            item["spec"]["conversion"] = {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": _client_config("/convert", url_base, ca_bundle),
                    "conversionReviewVersions": ["v1"],
                },
            }
    return items


def _objects(text: str) -> Iterator[dict[str, Any]]:
    """The objects of a stream of JSON documents (kubectl prints one per file), Lists opened."""
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return
        doc, pos = decoder.raw_decode(text, pos)
        if doc.get("kind") == "List":
            yield from doc.get("items", [])
        else:
            yield doc


def main(argv: list[str]) -> int:
    """Read JSON objects or Lists on stdin, write the rewritten List on stdout."""
    if len(argv) != 4 or argv[1] not in ("webhooks", "crds"):
        print(__doc__, file=sys.stderr)
        return 2
    _, what, url_base, ca_file = argv
    with open(ca_file, "rb") as f:
        ca_bundle = base64.b64encode(f.read()).decode("ascii")
    items = list(_objects(sys.stdin.read()))
    rewrite = webhooks if what == "webhooks" else crds
    json.dump(
        {"apiVersion": "v1", "kind": "List", "items": rewrite(items, url_base, ca_bundle)},
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
