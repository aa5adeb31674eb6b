"""Mutation testing of the domain logic: core/, allocation/ and accounting/, with mutmut.

    nice -n 10 .venv/bin/python bench/mutation.py --per-area 100 --seed 23 --jobs 2

mutmut copies the package to `mutants/`, writes every mutant of every function there behind
a trampoline, runs the selected tests once to record which tests reach which function, and
then runs, per mutant, only the tests that reach its function (fastest first, stopping at
the first failure). That selection is what makes a campaign fit a two-core machine.

The sample is seeded and stable: each mutant's rank is a hash of the seed and its name, and
the `--per-area` lowest ranks of each area are taken, so adding code elsewhere does not
reshuffle the sample. Mutants that survive and cannot be killed because they do not change
behaviour are listed, with a reason, in the "Mutation testing" section of bench/RESULTS.md;
a listed mutant counts as equivalent only while it survives and its mutated line still reads
as recorded there.

The last line is JSON: `killed`, `survived` (no test failed, or no test reached the
function), `timed_out`, `equivalent`, `total` and `score` = killed / (total - equivalent),
overall and per area. Survivors are listed above it and in bench/out/mutation.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AREAS = ("core", "allocation", "accounting")
RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Mutation testing"

# mutmut's exit-code vocabulary (mutmut.stats.status_by_exit_code) folded into ours.
KILLED_STATUSES = frozenset({"killed", "segfault"})
TIMEOUT_STATUSES = frozenset({"timeout"})


@dataclass(frozen=True, slots=True)
class Equivalent:
    """A surviving mutant that changes no behaviour, as recorded in bench/RESULTS.md."""

    name: str
    mutated: str  # the mutated line, stripped, as `mutmut show` prints it after "+"
    reason: str


def area_of(mutant: str) -> str:
    """'gpucenter.core.walk.x_quick_walk__mutmut_3' -> 'core'."""
    return mutant.split(".")[1]


def rank(seed: int, mutant: str) -> str:
    return hashlib.sha256(f"{seed}:{mutant}".encode()).hexdigest()


def sample(names: Iterable[str], seed: int, per_area: int) -> list[str]:
    """The `per_area` lowest-ranked mutants of each area (all of an area if it has fewer)."""
    by_area: dict[str, list[str]] = {a: [] for a in AREAS}
    for n in names:
        by_area.setdefault(area_of(n), []).append(n)
    chosen: list[str] = []
    for area in AREAS:
        members = sorted(by_area[area], key=lambda n: rank(seed, n))
        chosen += members if per_area <= 0 else members[:per_area]
    return sorted(chosen)


_ROW = re.compile(r"^\|\s*`(gpucenter\.[^`]+__mutmut_\d+)`\s*\|\s*`(.*)`\s*\|\s*(.+?)\s*\|$")


def load_equivalents(path: Path = RESULTS) -> dict[str, Equivalent]:
    """Rows `| mutant | mutated line | reason |` of the mutation section's equivalents table."""
    text = path.read_text(encoding="utf-8")
    start = text.find(SECTION)
    if start < 0:
        return {}
    body = text[start + len(SECTION) :]
    nxt = re.search(r"^## ", body, flags=re.M)
    body = body[: nxt.start()] if nxt else body
    found: dict[str, Equivalent] = {}
    for line in body.splitlines():
        m = _ROW.match(line)
        if m:
            found[m.group(1)] = Equivalent(m.group(1), m.group(2).replace("\\|", "|"), m.group(3))
    return found


def generate() -> dict[str, Path]:
    """Write the mutants (unchanged files are kept) and return mutant name -> source file."""
    import mutmut.__main__ as mm
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.trampoline import set_mutant_under_test

    set_mutant_under_test("mutant_generation")
    Path("mutants").mkdir(exist_ok=True)
    mm.copy_src_dir()
    mm.copy_also_copy_files()
    mm.setup_source_paths()
    mm.create_mutants(max(1, os.cpu_count() or 1))
    names: dict[str, Path] = {}
    from mutmut.utils.file_utils import walk_mutatable_files

    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for key in data.exit_code_by_key:
            names[key] = path
    return names


def statuses(paths: Iterable[Path]) -> dict[str, str]:
    """Mutant name -> mutmut's status word, from the result files it keeps per source file."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.stats import status_by_exit_code

    out: dict[str, str] = {}
    for path in set(paths):
        data = SourceFileMutationData(path=path)
        data.load()
        for key, code in data.exit_code_by_key.items():
            out[key] = status_by_exit_code[code]
    return out


def mutated_line(name: str, path: Path) -> str:
    """The first added line of the mutant's diff, stripped (for the equivalents check)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(name, path=path)
    for line in diff.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            return line[1:].strip()
    return ""


def tally(
    chosen: list[str],
    status: Mapping[str, str],
    equivalents: Mapping[str, Equivalent],
    lines: Mapping[str, str],
) -> dict[str, object]:
    """Counts and score for a list of mutants."""
    killed = timed_out = survived = equivalent = 0
    for n in chosen:
        s = status.get(n, "not checked")
        if s in KILLED_STATUSES:
            killed += 1
        elif s in TIMEOUT_STATUSES:
            timed_out += 1
        elif n in equivalents and lines.get(n) == equivalents[n].mutated:
            equivalent += 1
        else:
            survived += 1
    total = len(chosen)
    judged = total - equivalent
    return {
        "total": total,
        "killed": killed,
        "survived": survived,
        "timed_out": timed_out,
        "equivalent": equivalent,
        "score": round(killed / judged, 4) if judged else 1.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=23)
    ap.add_argument("--per-area", type=int, default=100, help="mutants per area; 0: all")
    ap.add_argument("--jobs", type=int, default=2, help="mutants tested at once")
    ap.add_argument(
        "--only",
        choices=("all", "survivors", "none"),
        default="all",
        help="survivors: re-test only the sampled mutants not killed in the last run; "
        "none: only tally the last run's results",
    )
    args = ap.parse_args()
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    where = generate()
    chosen = sample(where, args.seed, args.per_area)
    equivalents = load_equivalents()
    before = statuses(where[n] for n in chosen)
    to_run = chosen
    if args.only == "survivors":
        to_run = [n for n in chosen if before.get(n) not in KILLED_STATUSES]
    elif args.only == "none":
        to_run = []
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    if to_run:
        with (out / "mutmut-run.log").open("w", encoding="utf-8") as log:
            done = subprocess.run(
                [
                    str(Path(sys.executable).with_name("mutmut")),
                    "run",
                    "--max-children",
                    str(args.jobs),
                    *to_run,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            sys.exit(f"mutmut run exited {done.returncode}; see bench/out/mutmut-run.log")
    status = statuses(where[n] for n in chosen)
    lines = {n: mutated_line(n, where[n]) for n in chosen if n in equivalents}
    per_area = {
        a: tally([n for n in chosen if area_of(n) == a], status, equivalents, lines) for a in AREAS
    }
    overall = tally(chosen, status, equivalents, lines)
    survivors = [
        n
        for n in chosen
        if status.get(n) not in KILLED_STATUSES | TIMEOUT_STATUSES
        and not (n in equivalents and lines.get(n) == equivalents[n].mutated)
    ]
    stale = sorted(
        n
        for n in chosen
        if n in equivalents
        and (status.get(n) in KILLED_STATUSES or lines.get(n) != equivalents[n].mutated)
    )
    for n in survivors:
        print(f"survived ({status.get(n, 'not checked')}): {n}")
    for n in stale:
        print(f"listed as equivalent but its line changed or it was killed: {n}")
    from importlib.metadata import version

    report: dict[str, object] = {
        "tool": f"mutmut {version('mutmut')}",
        "seed": args.seed,
        "per_area": args.per_area,
        **overall,
        "areas": per_area,
        "survivors": len(survivors),
        "stale_equivalents": len(stale),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "mutation.json").write_text(
        json.dumps({**report, "survivor_names": survivors, "stale_names": stale}, indent=2),
        encoding="utf-8",
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
