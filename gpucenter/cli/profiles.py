"""The CLI's per-user configuration: which server, which token, from any directory.

Why: the token used to live in `./var/cli-token` and the server's address in
`GPUCENTER_API_URL`, so the CLI worked only from the repository root and went to port 8000
whatever port the server was given. Now `gpucenter login` (and `gpucenter demo load`, which
signs the demo user in) writes a profile to `$XDG_CONFIG_HOME/gpucenter/config.toml`
(`~/.config/gpucenter/config.toml` by default), readable by its owner only (0600, in a 0700
directory), and every command reads it wherever it runs.

A profile holds `url` and `token` (and the `username` they belong to); on the server host
`gpucenter demo load` also records the server's `var_dir` (and `database_url` where one is
set), so that admin commands find the server's state from any directory. Environment
variables still win (`GPUCENTER_API_URL`, `GPUCENTER_TOKEN`, `GPUCENTER_VAR_DIR`,
`GPUCENTER_DATABASE_URL`), and a `./var` holding a database wins over a recorded var_dir
(a checkout's own server). `GPUCENTER_PROFILE` or `gpucenter --profile NAME` picks a
profile other than the file's `profile` (else "default").
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PROFILE = "default"
KEYS = ("url", "token", "username", "var_dir", "database_url")


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_CONFIG_HOME/gpucenter/config.toml`, or `~/.config/...` when that is unset."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gpucenter" / "config.toml"


@dataclass
class Config:
    """The file's contents: the chosen profile's name and every profile's settings."""

    profile: str = DEFAULT_PROFILE
    profiles: dict[str, dict[str, str]] = field(default_factory=dict)

    def chosen(self, environ: Mapping[str, str] | None = None) -> str:
        env = os.environ if environ is None else environ
        return env.get("GPUCENTER_PROFILE") or self.profile or DEFAULT_PROFILE

    def active(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        return dict(self.profiles.get(self.chosen(environ), {}))


def load(path: Path | None = None) -> Config:
    """The configuration, or an empty one when there is no file (or it cannot be read)."""
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return Config()
    profiles: dict[str, dict[str, str]] = {}
    for name, values in (data.get("profiles") or {}).items():
        if isinstance(values, dict):
            profiles[str(name)] = {k: str(v) for k, v in values.items() if k in KEYS}
    return Config(str(data.get("profile") or DEFAULT_PROFILE), profiles)


def save(config: Config, path: Path | None = None) -> Path:
    """Write the file readable by its owner only; the folder is made 0700 if it is new."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = [
        "# gpucenter CLI configuration, written by `gpucenter login` (owner-only: it holds",
        "# API tokens). `gpucenter --profile NAME` or GPUCENTER_PROFILE picks a profile.",
        f"profile = {_quote(config.profile)}",
    ]
    for name in sorted(config.profiles):
        lines.append("")
        lines.append(f"[profiles.{_quote(name)}]")
        for key in KEYS:
            value = config.profiles[name].get(key)
            if value:
                lines.append(f"{key} = {_quote(value)}")
    text = "\n".join(lines) + "\n"
    # Created 0600 before anything is written: the token never sits in a readable file.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)
    return path


def update(values: Mapping[str, str], profile: str | None = None, path: Path | None = None) -> Path:
    """Set `values` in `profile` (the active one when None) and make it the file's default
    when it is the only one."""
    config = load(path)
    name = profile or config.chosen()
    merged = config.profiles.setdefault(name, {})
    merged.update({k: v for k, v in values.items() if k in KEYS and v})
    if len(config.profiles) == 1 or not config.profile:
        config.profile = name
    return save(config, path)


def apply_to_environment(environ: dict[str, str] | os._Environ[str]) -> str:
    """Put the active profile's settings into `environ` where no variable sets them, before
    the settings are read; returns the profile's name. Server-side state (var_dir,
    database_url) is taken only when the working directory has no `var/gpucenter.db`."""
    config = load(config_path(environ))
    name = config.chosen(environ)
    values = config.active(environ)
    pairs = {"GPUCENTER_API_URL": values.get("url"), "GPUCENTER_TOKEN": values.get("token")}
    local_state = "GPUCENTER_VAR_DIR" in environ or Path("var", "gpucenter.db").exists()
    if not local_state:
        pairs["GPUCENTER_VAR_DIR"] = values.get("var_dir")
        pairs["GPUCENTER_DATABASE_URL"] = values.get("database_url")
    for key, value in pairs.items():
        if value and not environ.get(key):
            environ[key] = value
    return name


def _quote(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


__all__ = ["Config", "apply_to_environment", "config_path", "load", "save", "update"]
