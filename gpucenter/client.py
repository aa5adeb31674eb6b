"""A small typed Python client for the REST API (the CLI uses it too)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import httpx


class ApiError(Exception):
    """The server answered with a problem+json error."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(f"{title} ({status}): {detail}")
        self.status = status
        self.title = title
        self.detail = detail


class Client:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=base_url, headers=headers, transport=transport, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.status_code >= 400:
            try:
                body = resp.json()
                raise ApiError(resp.status_code, body.get("title", ""), body.get("detail", ""))
            except ValueError:
                raise ApiError(resp.status_code, resp.reason_phrase, resp.text[:500]) from None
        return resp

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        return self._check(self._http.request(method, url, **kw)).json()

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/healthz")
        return result

    def login(self, username: str, password: str) -> str:
        body = self._json(
            "POST", "/api/v1/auth/token", json={"username": username, "password": password}
        )
        return str(body["token"])

    def submit(
        self, job: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._json("POST", "/api/v1/jobs", json=dict(job), headers=headers)
        return result

    def jobs(self, states: list[str] | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if states:
            params["state"] = states
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/jobs", params=params)
        return result

    def job(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/jobs/{job_id}")
        return result

    def cancel(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json("POST", f"/api/v1/jobs/{job_id}/cancel")
        return result

    def log_chunk(self, job_id: int, stream: str, offset: int) -> tuple[bytes, int, bool]:
        resp = self._check(
            self._http.get(
                f"/api/v1/jobs/{job_id}/logs", params={"stream": stream, "offset": offset}
            )
        )
        return (
            resp.content,
            int(resp.headers.get("X-Next-Offset", offset)),
            resp.headers.get("X-Job-Finished") == "true",
        )

    def follow_log(
        self, job_id: int, stream: str = "stdout", poll_s: float = 0.5
    ) -> Iterator[bytes]:
        """Yield chunks of a log until the job has ended and everything has been read."""
        import time

        offset = 0
        while True:
            chunk, offset, finished = self.log_chunk(job_id, stream, offset)
            if chunk:
                yield chunk
            if finished and not chunk:
                return
            if not chunk:
                time.sleep(poll_s)

    def projects(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/projects")
        return result

    def site(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/api/v1/site")
        return result
