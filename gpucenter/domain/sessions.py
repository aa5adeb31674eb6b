"""Interactive session kinds: a web application (JupyterLab first) run as an ordinary job.

A session is a job like any other (same scheduler, time limit, ledger, cancel); what makes it
a session is its kind, a template for the job's command. The command is filled in by the
server, never by the user, so a session's job cannot be steered into anything else:

- it listens on a Unix socket named `socket_name(job_id)` in its working directory (its run
  directory on a local site, its owner's log directory on a Slurm site),
  which only its owner and the root server can reach (a TCP port on a shared node would be
  reachable by every tenant there);
- except where the site's nodes are other machines than the server's (a Slurm site with
  ``sessions_over_tcp``: its dispatcher sets `TCP_VARIABLE` in the job's environment): a Unix
  socket there is out of the server's reach, so the job listens on TCP on its node, with TLS
  under a certificate it makes at start, and writes `address_name(job_id)` (host, port, the
  certificate and its SHA-256) beside where the socket would be. The proxy trusts that
  certificate only, so another tenant who binds the port (after the session ended, say) cannot
  answer as the session and is never sent its secret;
- it serves below `base_url(job_id)`, the portal's proxy prefix, so its pages' links work
  through the proxy;
- it checks a per-session secret the server gives it in ``JUPYTER_TOKEN`` (`TOKEN_VARIABLE`) at
  launch and adds to each proxied request; the secret is derived from a server key and never
  stored or shown;
- it shuts itself down after `idle_s` without activity; its wall time is the job's time limit.

A new kind is one more `SessionKind` in `KINDS` (an application that can listen on a Unix socket
below a base URL and check a token).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from gpucenter.domain.errors import ValidationError
from gpucenter.domain.messages import msg

__all__ = [
    "JUPYTERLAB",
    "KINDS",
    "SESSION_TEMPLATE_PREFIX",
    "TCP_BOOTSTRAP",
    "TCP_VARIABLE",
    "TOKEN_VARIABLE",
    "SessionKind",
    "address_name",
    "base_url",
    "is_session_path",
    "kind_named",
    "kind_of_template",
    "socket_name",
]


def socket_name(job_id: int) -> str:
    """The socket's name in the job's working directory. Named after the job: on a Slurm site
    the working directory is the owner's log directory, shared by all their jobs."""
    return f"session-{int(job_id)}.sock"


def address_name(job_id: int) -> str:
    """The address file of a session listening on TCP (JSON: host, port, cert, sha256), in the
    same directory as the socket would be."""
    return f"session-{int(job_id)}.addr"


TOKEN_VARIABLE = "JUPYTER_TOKEN"
TCP_VARIABLE = "GPUCENTER_SESSION_TCP"
"""Set to ``1`` by a dispatcher whose nodes the server cannot reach by Unix socket."""
SESSION_TEMPLATE_PREFIX = "session:"
"""A session's job records its kind in the job's template column as ``session:<kind>``."""
_PYTHON = re.compile(r"^/[A-Za-z0-9._/+-]+$")


TCP_BOOTSTRAP = r"""
import hashlib, json, os, shlex, socket, ssl, subprocess, sys
os.umask(0o077)
if not os.access(os.environ.get("HOME") or "/nonexistent", os.W_OK):
    os.environ["HOME"] = os.getcwd()  # as the Unix socket's command does: see JUPYTERLAB
job = str(int(os.environ["GPUCENTER_JOB_ID"]))
base = "session-" + job
host = os.environ.get("GPUCENTER_SESSION_HOST", "")
if not host:
    try:
        host = socket.gethostbyname(socket.getfqdn())
    except OSError:
        host = socket.gethostbyname(socket.gethostname())
probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
probe.bind((host, 0))
port = probe.getsockname()[1]
probe.close()
key, crt = base + ".key", base + ".crt"
for name in (key, crt, base + ".addr"):
    if os.path.lexists(name):
        os.unlink(name)
try:
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt, "-days", "30",
        "-subj", "/CN=gpucenter-session-" + job], check=True, capture_output=True)
else:
    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpucenter-session-" + job)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(private, hashes.SHA256()))
    for name, data in ((key, private.private_bytes(serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8, serialization.NoEncryption())),
            (crt, cert.public_bytes(serialization.Encoding.PEM))):
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
with open(crt) as f:
    pem = f.read()
digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()
temp = "." + base + ".addr.tmp"
if os.path.lexists(temp):
    os.unlink(temp)
fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
with os.fdopen(fd, "w") as out:
    json.dump({"host": host, "port": port, "sha256": digest, "cert": pem}, out)
os.replace(temp, base + ".addr")
args = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=" + host,
    "--ServerApp.port=%d" % port, "--ServerApp.port_retries=0",
    "--ServerApp.certfile=" + crt, "--ServerApp.keyfile=" + key,
    "--ServerApp.base_url=/sessions/%s/app/" % job] + shlex.split(sys.argv[1])
os.execv(sys.executable, args)
"""
"""The program a session's job runs where it listens on TCP (`TCP_VARIABLE`): pick a free
port on the node's address (``GPUCENTER_SESSION_HOST`` or the node's name resolved), make a
self-signed certificate and its key (0600, in the owner's own directory: the ``cryptography``
package of the session's environment, else ``openssl``), publish the address file atomically
(a temporary name, then rename: the proxy never reads half of it), then become JupyterLab
serving TLS there. Its one argument is the kind's `SessionKind.tcp_args`."""

_SESSION_PATH = re.compile(r"^/sessions/[0-9]+/app/")


def is_session_path(path: str) -> bool:
    """Whether `path` is forwarded to an interactive session (below some `base_url`)."""
    return _SESSION_PATH.match(path) is not None


def base_url(job_id: int) -> str:
    """Where the portal proxies session `job_id` (with a trailing slash, as Jupyter wants)."""
    return f"/sessions/{job_id}/app/"


@dataclass(frozen=True, slots=True)
class SessionKind:
    """One kind of interactive application and the command that starts it."""

    name: str
    title: str
    command: str
    """Format string: ``{python}`` (the site's interpreter), ``{idle_s}``; the job id (its socket's
    name, its base URL) is read from ``$GPUCENTER_JOB_ID`` when the job starts (unknown when it
    is submitted)."""
    tcp_args: str = ""
    """The application's arguments when it listens on TCP (`TCP_BOOTSTRAP` adds where and the
    certificate); ``{idle_s}`` is filled in. Empty: this kind listens on a Unix socket only."""

    @property
    def template(self) -> str:
        """What a session job of this kind records as its template."""
        return SESSION_TEMPLATE_PREFIX + self.name

    def render(self, python: str, idle_s: int) -> str:
        """The job's command line for this site's interpreter and idle timeout."""
        if not _PYTHON.match(python):
            raise ValidationError.about("python", msg("error.session_python", python=python))
        if idle_s < 60:
            raise ValidationError.about("idle_s", msg("error.session_idle"))
        quoted = shlex.quote(python)
        over_tcp = ""
        if self.tcp_args:
            # Filled in here, not by format(): the program's braces are Python's own.
            over_tcp = (
                f'if [ "${{{TCP_VARIABLE}:-}}" = 1 ]; then exec {quoted} -c '
                f"{shlex.quote(TCP_BOOTSTRAP)} {shlex.quote(self.tcp_args.format(idle_s=idle_s))}; "
                "fi; "
            )
        return over_tcp + self.command.format(python=quoted, idle_s=int(idle_s))


JUPYTERLAB = SessionKind(
    name="jupyterlab",
    title="JupyterLab",
    command=(
        # A Slurm job may inherit a HOME it cannot write (sbatch --uid keeps the submitter's):
        # Jupyter's runtime files then go to the working directory, the owner's own.
        '[ -w "$HOME" ] || export HOME="$PWD"; '
        "exec {python} -m jupyterlab --no-browser"
        ' --ServerApp.sock="session-$GPUCENTER_JOB_ID.sock" --ServerApp.sock_mode=0600'
        ' --ServerApp.base_url="/sessions/$GPUCENTER_JOB_ID/app/"'
        " --ServerApp.allow_remote_access=True"
        " --ServerApp.shutdown_no_activity_timeout={idle_s}"
        " --MappingKernelManager.cull_idle_timeout={idle_s}"
        " --MappingKernelManager.cull_interval=60"
        " --TerminalManager.cull_inactive_timeout={idle_s}"
        " --ServerApp.root_dir=."
    ),
    tcp_args=(
        "--ServerApp.allow_remote_access=True"
        " --ServerApp.shutdown_no_activity_timeout={idle_s}"
        " --MappingKernelManager.cull_idle_timeout={idle_s}"
        " --MappingKernelManager.cull_interval=60"
        " --TerminalManager.cull_inactive_timeout={idle_s}"
        " --ServerApp.root_dir=."
    ),
)

KINDS: dict[str, SessionKind] = {JUPYTERLAB.name: JUPYTERLAB}


def kind_named(name: str) -> SessionKind:
    """The kind called `name`; ValidationError naming the known ones otherwise."""
    kind = KINDS.get(name)
    if kind is None:
        known = ", ".join(KINDS)
        raise ValidationError.about("kind", msg("error.session_kind", name=name, known=known))
    return kind


def kind_of_template(template: str | None) -> SessionKind | None:
    """The session kind a job's template column names, or None for an ordinary job."""
    if not template or not template.startswith(SESSION_TEMPLATE_PREFIX):
        return None
    return KINDS.get(template[len(SESSION_TEMPLATE_PREFIX) :])
