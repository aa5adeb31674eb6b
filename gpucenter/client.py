"""A small typed Python client for the REST API (the CLI uses it too)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from gpucenter.domain.messages import Message

ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


class ApiError(Exception):
    """The server answered with a problem+json error. `message` is the error as a message
    code with parameters, when the server sent one (to say it in another language)."""

    def __init__(
        self, status: int, title: str, detail: str, message: Message | None = None
    ) -> None:
        super().__init__(f"{title} ({status}): {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.message = message


class JobFailed(Exception):
    """`Client.wait` found the job ended without completing: FAILED, CANCELLED or TIMEOUT.

    `job` is the job as the API last showed it; `reason` says why (the scheduler's or the
    site's words: an exit code, a time limit, who cancelled it)."""

    def __init__(self, job: Mapping[str, Any]) -> None:
        self.job = dict(job)
        self.job_id = int(job["id"])
        self.state = str(job["state"])
        self.exit_code = job.get("exit_code")
        self.reason = str(job.get("reason_detail") or "")
        code = f", exit code {self.exit_code}" if self.exit_code is not None else ""
        why = f": {self.reason}" if self.reason else ""
        super().__init__(f"job {self.job_id} ended {self.state}{code}{why}")


class WaitTimeout(TimeoutError):
    """`Client.wait` gave up before the job ended."""


class Client:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        language: str | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if language:
            headers["Accept-Language"] = language
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
            except ValueError:
                raise ApiError(resp.status_code, resp.reason_phrase, resp.text[:500]) from None
            raise ApiError(
                resp.status_code,
                body.get("title", ""),
                body.get("detail", ""),
                Message.from_json(body) if isinstance(body, dict) else None,
            )
        return resp

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        return self._check(self._http.request(method, url, **kw)).json()

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/healthz")
        return result

    def login(self, username: str, password: str, code: str | None = None) -> str:
        """A new API token for a username and password (and TOTP code, where it is on)."""
        payload = {"username": username, "password": password}
        if code:
            payload["code"] = code
        body = self._json("POST", "/api/v1/auth/token", json=payload)
        return str(body["token"])

    def submit(
        self, job: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._json("POST", "/api/v1/jobs", json=dict(job), headers=headers)
        return result

    def jobs_page(
        self,
        *,
        states: list[str] | None = None,
        project: str | None = None,
        array_job_id: int | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One page: {"items": [...], "next_cursor": str | None}."""
        params: dict[str, Any] = {"limit": limit}
        if states:
            params["state"] = states
        if project:
            params["project"] = project
        if array_job_id is not None:
            params["array_job_id"] = array_job_id
        if cursor:
            params["cursor"] = cursor
        result: dict[str, Any] = self._json("GET", "/api/v1/jobs", params=params)
        return result

    def jobs(
        self, states: list[str] | None = None, limit: int = 100, project: str | None = None
    ) -> list[dict[str, Any]]:
        """Up to `limit` jobs, newest first, following cursors as needed."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while len(items) < limit:
            page = self.jobs_page(
                states=states, project=project, limit=min(500, limit - len(items)), cursor=cursor
            )
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        return items

    def job(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/jobs/{job_id}")
        return result

    def pending(self, job_id: int) -> dict[str, Any]:
        """Why a pending job waits: a sentence, its place in the queue of its GPU type, the
        expected start and what would start it sooner (409 once it is not pending)."""
        result: dict[str, Any] = self._json("GET", f"/api/v1/jobs/{job_id}/pending")
        return result

    def wait(
        self, job_id: int, timeout: float | None = None, poll_s: float = 1.0
    ) -> dict[str, Any]:
        """Block until the job has ended and return it if it COMPLETED; raise `JobFailed`
        (with the state, exit code and reason) if it failed, timed out or was cancelled,
        and `WaitTimeout` if `timeout` seconds pass first. A script written as
        `api.wait(job["id"])` therefore never carries on after a failed job unawares."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] == "COMPLETED":
                return job
            if job["state"] in ENDED:
                raise JobFailed(job)
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"job {job_id} is still {job['state']} after {timeout} s")
            time.sleep(poll_s)

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

    def events(self, job_id: int, stream: str = "stdout") -> Iterator[tuple[str, dict[str, Any]]]:
        """Server-sent events of a job: ("state", {...}), ("log", {"text": ...}), ("end", {...})."""
        with self._http.stream(
            "GET",
            f"/api/v1/jobs/{job_id}/events",
            params={"stream": stream},
            timeout=httpx.Timeout(30.0, read=None),
        ) as resp:
            if resp.status_code >= 400:
                resp.read()
                self._check(resp)
            name = ""
            data: list[str] = []
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif not line and name:
                    yield name, json.loads("\n".join(data))
                    if name == "end":
                        return
                    name, data = "", []

    def follow_log(self, job_id: int, stream: str = "stdout") -> Iterator[str]:
        """Yield a job's output as it is written, until the job has ended."""
        for name, payload in self.events(job_id, stream):
            if name == "log":
                yield str(payload["text"])

    def templates(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/templates")
        return result

    def usage(
        self, since: str | None = None, until: str | None = None, project: str | None = None
    ) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("since", since), ("until", until), ("project", project)) if v}
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/usage", params=params)
        return result

    def projects(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/projects")
        return result

    def site(self) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", "/api/v1/site")
        return result
