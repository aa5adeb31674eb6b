#!/usr/bin/env bash
# A Python environment with JupyterLab that every job's account can run: Debian's python3 and
# a virtualenv in a world-readable directory (not the server's own environment, which may live
# where tenants cannot reach, such as below /root). Used by the Slurm session test, whose jobs
# run unsandboxed as real users; a site points GPUCENTER_SESSION_PYTHON at such a tree.
# cryptography: a session on a multi-host Slurm site makes its TLS certificate with it at
# start (without it, with openssl).
# Idempotent: prints the interpreter's path; builds it the first time (PyPI, about a minute).
set -euo pipefail
DIR="${GPUCENTER_JUPYTER_ENV:-/var/cache/gpucenter-jupyter}"
PY="$DIR/bin/python"
if [ -x "$PY" ] && "$PY" -c "import jupyterlab, ipykernel, cryptography" 2>/dev/null; then
  echo "$PY"; exit 0
fi
umask 022
[ -x "$PY" ] || /usr/bin/python3 -m venv "$DIR" >&2
"$DIR/bin/pip" install --quiet 'jupyterlab>=4.2,<5' 'cryptography>=42' >&2
chmod -R a+rX "$DIR"
echo "$PY"
