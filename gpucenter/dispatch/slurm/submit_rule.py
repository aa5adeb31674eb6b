"""The submit rule that refuses, at the cluster, jobs in gpucenter's accounts that gpucenter
did not submit (a site's ``outside_submissions: refuse``).

Slurm has no association or QOS setting that says "only this submitter may use the account":
a user must be in a project's account for gpucenter to submit their jobs there as them
(``sbatch --uid``), and that association is exactly what lets them ``sbatch -A`` it
themselves. What tells the two apart is *who called sbatch*: gpucenter runs it as root (or
as the site's ``SlurmUser``) with ``--uid``, a user as themselves. Slurm hands that caller
(``submit_uid``) to a job submit plugin, and Debian's ``slurm-wlm-basic-plugins`` ships
``job_submit_lua.so``, so the rule is a short Lua script (`render`) that slurmctld runs on
every ``sbatch``/``salloc``/``srun`` and on every job update (``scontrol update job ...
Account=``):

- a job whose account (given, or else the user's default account) lies in a *refusing*
  namespace is refused unless its caller is one of the allowed uids (root, SlurmUser);
- a namespace refuses when a file named after it (gpucenter's top account) is in the rule's
  directory (`REFUSE_DIR`): ``gpucenter slurm submit-rule --install`` writes it for a site
  with ``outside_submissions: refuse`` and removes it for ``flag``. So one cluster can hold
  several gpucenter namespaces with different settings, and the script itself never changes.

slurm.conf needs ``JobSubmitPlugins=lua``; the script is ``job_submit.lua`` beside slurm.conf
(slurmctld reads it again when it changes). Jobs in other accounts are not touched.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REFUSE_DIR", "install", "refusing", "render"]

REFUSE_DIR = "/etc/slurm/gpucenter-refuse.d"
"""One empty file per refusing namespace (top account), read by the rule at each submit."""


def render(allowed_uids: tuple[int, ...] = (0,), refuse_dir: str = REFUSE_DIR) -> str:
    """The job_submit.lua script (see the module docstring)."""
    uids = ", ".join(f"[{int(u)}] = true" for u in sorted(set(allowed_uids)))
    return f"""-- Written by gpucenter (gpucenter slurm submit-rule): refuses jobs in gpucenter's
-- project accounts that gpucenter did not submit, where the namespace asks for it.
local allowed = {{ {uids} }}
local refuse_dir = "{refuse_dir}"

local function exists(path)
  local f = io.open(path, "r")
  if f ~= nil then io.close(f) return true end
  return false
end

-- The refusing namespace the account lies in (a prefix of it up to an underscore), or nil.
local function refusing(account)
  if account == nil or account == "" then return nil end
  account = string.lower(account)
  local i = 0
  while true do
    i = string.find(account, "_", i + 1, true)
    if i == nil then return nil end
    local top = string.sub(account, 1, i - 1)
    if exists(refuse_dir .. "/" .. top) then return top end
  end
end

local function check(account, uid, what)
  local top = refusing(account)
  if top ~= nil and not allowed[uid] then
    slurm.log_info("gpucenter rule: %s of uid %d in account %s refused", what, uid, account)
    slurm.log_user("account " .. account .. " is a gpucenter project account: submit " ..
      "through gpucenter (jobs submitted to it directly are refused at this site)")
    return slurm.ERROR
  end
  return slurm.SUCCESS
end

function slurm_job_submit(job_desc, part_list, submit_uid)
  local account = job_desc.account
  if account == nil or account == "" then account = job_desc.default_account end
  return check(account, submit_uid, "job")
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  if job_desc.account ~= nil then return check(job_desc.account, modify_uid, "move") end
  return slurm.SUCCESS
end

return slurm.SUCCESS
"""


def install(
    conf_dir: Path,
    top_account: str,
    refuse: bool,
    allowed_uids: tuple[int, ...] = (0,),
    refuse_dir: Path = Path(REFUSE_DIR),
) -> list[str]:
    """Write ``job_submit.lua`` into `conf_dir` (when it differs) and mark `top_account`'s
    namespace as refusing or not; what it changed. slurm.conf must name
    ``JobSubmitPlugins=lua`` (a restart of slurmctld the first time)."""
    done: list[str] = []
    script = Path(conf_dir) / "job_submit.lua"
    text = render(allowed_uids, str(refuse_dir))
    if not script.exists() or script.read_text() != text:
        tmp = script.with_name(script.name + ".new")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, script)
        done.append(f"wrote {script}")
    refuse_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    flag = refuse_dir / top_account.lower()
    if refuse and not flag.exists():
        flag.touch(mode=0o644)
        done.append(f"{top_account}: outside submissions refused ({flag})")
    elif not refuse and flag.exists():
        flag.unlink()
        done.append(f"{top_account}: outside submissions allowed and flagged ({flag} removed)")
    return done


def refusing(top_account: str, refuse_dir: Path = Path(REFUSE_DIR)) -> bool:
    """Does the rule refuse outside submissions in this namespace now?"""
    return (refuse_dir / top_account.lower()).exists()


if __name__ == "__main__":  # scripts/slurm/setup.sh: the script, without importing gpucenter
    import sys

    print(render(tuple(int(u) for u in sys.argv[1:]) or (0,)), end="")
