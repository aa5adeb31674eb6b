"""Talking to a Kubernetes API server: one transport boundary, JSON in and out.

Every request goes through `KubeApi.request`, which uses the official `kubernetes` client for
what is hard to get right (reading a kubeconfig or the in-cluster service account, TLS,
client certificates, bearer tokens, connection pooling) and its generic REST call for the
request itself. We do not use the client's per-kind generated methods and models: the
dispatcher and the namespace sync speak to built-in kinds and to Kueue's custom resources
alike, by path, with plain dicts; and turning a list of a thousand Jobs into model objects
on every poll costs more CPU than the poll is worth on a busy control plane.

Failures become exceptions the callers act on:

- `KubernetesUnavailable` (a `SiteUnavailable`): no connection, a timeout, 401, 429 or a 5xx
  (the API server, etcd or a fail-closed admission webhook such as Kueue's is down). The
  caller keeps its jobs as they are and retries.
- `KubernetesError` (a `DispatchError`) with the API's status, reason and message: the server
  answered and refused; `NotFound` (404) and `Conflict` (409) are told apart because the
  dispatcher acts on them (a missing namespace is provisioned; a Job that exists already is
  adopted, never created twice).
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpucenter.dispatch.base import DispatchError, SiteUnavailable

__all__ = [
    "BATCH",
    "CORE",
    "KUEUE",
    "RBAC",
    "Conflict",
    "Kind",
    "KubeApi",
    "KubernetesError",
    "KubernetesUnavailable",
    "NotFound",
]

_log = logging.getLogger(__name__)
Json = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
_PAGE = 500  # objects per list page


class KubernetesError(DispatchError):
    """The API server answered and refused; `reason` is its machine word (``Invalid``...)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"Kubernetes API {status} {reason}: {message}")


class NotFound(KubernetesError):
    """404: the object (or the namespace it would live in) does not exist."""


class Conflict(KubernetesError):
    """409: it exists already (or changed under us)."""


class KubernetesUnavailable(KubernetesError, SiteUnavailable):
    """The API server cannot be reached or cannot serve now: retry later."""


@dataclass(frozen=True, slots=True)
class Kind:
    """Where a kind of object lives in the API: its group/version prefix and plural."""

    prefix: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The collection (all namespaces when `namespace` is None) or one object."""
        base = self.prefix
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return base if name is None else f"{base}/{name}"


CORE = "/api/v1"
BATCH = "/apis/batch/v1"
RBAC = "/apis/rbac.authorization.k8s.io/v1"
KUEUE = "/apis/kueue.x-k8s.io/v1beta2"

JOBS = Kind(BATCH, "jobs")
PODS = Kind(CORE, "pods")
NODES = Kind(CORE, "nodes", namespaced=False)
NAMESPACES = Kind(CORE, "namespaces", namespaced=False)
QUOTAS = Kind(CORE, "resourcequotas")
ROLES = Kind(RBAC, "roles")
ROLE_BINDINGS = Kind(RBAC, "rolebindings")
FLAVORS = Kind(KUEUE, "resourceflavors", namespaced=False)
CLUSTER_QUEUES = Kind(KUEUE, "clusterqueues", namespaced=False)
LOCAL_QUEUES = Kind(KUEUE, "localqueues")
WORKLOADS = Kind(KUEUE, "workloads")


def _transport_errors() -> tuple[type[BaseException], ...]:
    import urllib3

    return (urllib3.exceptions.HTTPError, OSError)


class KubeApi:
    """JSON requests to one API server with the credentials of a kubeconfig (or of the pod
    gpucenter runs in). `timeout_s` bounds each request's read; connecting gets 5 s."""

    def __init__(self, api_client: Any, timeout_s: float = 30.0) -> None:
        self._client = api_client
        self._timeout = (min(5.0, timeout_s), timeout_s)
        self._errors = _transport_errors()

    @classmethod
    def connect(
        cls, kubeconfig: Path | None = None, context: str | None = None, timeout_s: float = 30.0
    ) -> KubeApi:
        """From a kubeconfig file; without one, the pod's service account when gpucenter runs
        in the cluster, else ``$KUBECONFIG`` / ``~/.kube/config`` as kubectl reads them."""
        from kubernetes import client

        config: Any = importlib.import_module("kubernetes.config")  # untyped: used as Any
        if kubeconfig is not None:
            api_client = config.new_client_from_config(config_file=str(kubeconfig), context=context)
        else:
            configuration = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                config.load_kube_config(context=context, client_configuration=configuration)
            api_client = client.ApiClient(configuration)
        return cls(api_client, timeout_s)

    @property
    def server(self) -> str:
        """The API server's URL (for messages)."""
        return str(self._client.configuration.host)

    # ---------------------------------------------------------------------- requests
    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        content_type: str = "application/json",
        timeout_s: float | None = None,
        raw: bool = False,
    ) -> Any:
        """One request; the decoded JSON answer (the text itself with `raw`)."""
        headers = {"Accept": "*/*" if raw else "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        timeout = self._timeout if timeout_s is None else (min(5.0, timeout_s), timeout_s)
        try:
            verb, url, headers, body, _ = self._client.param_serialize(
                method,
                path,
                query_params=list(query) or None,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(verb, url, headers, body, _request_timeout=timeout)
            data = response.read()
        except self._errors as exc:
            raise KubernetesUnavailable(0, "Unreachable", f"{self.server}: {exc}") from exc
        if response.status >= 400:
            raise _refusal(response.status, data)
        if raw:
            return data.decode("utf-8", "replace")
        return json.loads(data) if data else {}

    def get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> Json:
        return dict(self.request("GET", path, query=query))

    def list(self, path: str, label_selector: str | None = None) -> list[Json]:
        """Every object of a collection (page by page), optionally by label selector."""
        return list(self._pages(path, label_selector))

    def _pages(self, path: str, label_selector: str | None) -> Iterator[Json]:
        token = ""
        while True:
            query = [("limit", str(_PAGE))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = self.get(path, query)
            yield from page.get("items") or ()
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def create(self, path: str, body: Mapping[str, Any]) -> Json:
        return dict(self.request("POST", path, body=dict(body)))

    def patch(self, path: str, body: Mapping[str, Any]) -> Json:
        """A JSON merge patch (RFC 7386): the same for built-in kinds and custom resources."""
        return dict(self.request("PATCH", path, body=dict(body), content_type=MERGE_PATCH))

    def delete(self, path: str, propagation: str | None = None) -> bool:
        """Delete; False when it was not there. `propagation`: Foreground or Background."""
        body = None
        if propagation is not None:
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        try:
            self.request("DELETE", path, body=body)
        except NotFound:
            return False
        return True

    def text(
        self, path: str, query: Sequence[tuple[str, str]] = (), timeout_s: float = 10.0
    ) -> str:
        """A plain-text answer (a pod's log)."""
        return str(self.request("GET", path, query=query, timeout_s=timeout_s, raw=True))


def _refusal(status: int, data: bytes) -> KubernetesError:
    """The error for a non-2xx answer, from the API's Status object where there is one."""
    reason, message = "", data.decode("utf-8", "replace").strip()
    try:
        decoded = json.loads(data)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        reason = str(decoded.get("reason") or "")
        message = str(decoded.get("message") or message)
    message = message[:2000]
    if status == 404:
        return NotFound(status, reason or "NotFound", message)
    if status == 409:
        return Conflict(status, reason or "Conflict", message)
    if status in (401, 429) or status >= 500:
        return KubernetesUnavailable(status, reason or "Unavailable", message)
    return KubernetesError(status, reason or "Refused", message)
