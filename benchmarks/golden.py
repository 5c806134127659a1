"""Golden check: every shipped scenario's outputs, byte for byte, against recorded hashes.

    python benchmarks/golden.py            # run every scenario, compare with golden.json
    python benchmarks/golden.py --update   # rerun and rewrite golden.json (say why in the commit)
    python benchmarks/golden.py --only tiny consumer-8b

Each scenario (the tiny test scenario and `scenarios/*.yaml`) runs through the CLI as
`fleetsim run SCENARIO --out DIR --skip-analysis` (the flagship also once with its `analysis:`
section, as `flagship+analysis`), and the sha256 of `summary.json`, every Parquet file under
`results/`, `report.md`, `report.html` and `scenario.resolved.yaml` is recorded in
`benchmarks/golden.json`.
A refactoring keeps them identical; a change that moves a number (a fidelity fix, a bug fix)
reruns this with `--update` and names the change in its commit. `make test` compares the
scenarios it already runs (`tests/test_run.py`) with the same records, at no extra cost.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "benchmarks" / "golden.json"
TINY = REPO / "tests" / "data" / "tiny_scenario.yaml"
HASHED = ("summary.json", "report.md", "report.html", "scenario.resolved.yaml")
"""Files hashed besides every `results/*.parquet` (report.html too: its embedded plots are
deterministic for one matplotlib; the records are of this machine's libraries)."""
WALL_CLOCK = re.compile(rb"Computed in [0-9.,]+ s")
"""The analyses' wall-clock times in report.html, hashed as `Computed in ? s`."""


def scenarios() -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Golden name -> (scenario file, extra `fleetsim run` flags)."""
    out = {"tiny": (TINY, ())}
    for p in sorted((REPO / "scenarios").glob("*.yaml")):
        out[p.stem] = (p, ("--skip-analysis",))
    out["flagship+analysis"] = (REPO / "scenarios" / "flagship.yaml", ())
    return out


def output_hashes(out: Path) -> dict[str, str]:
    """sha256 of each golden file in a run's output folder, by its path inside it."""
    files = [out / n for n in HASHED] + sorted((out / "results").glob("*.parquet"))
    return {p.relative_to(out).as_posix(): hashlib.sha256(_stable_bytes(p)).hexdigest()
            for p in files if p.is_file()}


def _stable_bytes(p: Path) -> bytes:
    data = p.read_bytes()
    return WALL_CLOCK.sub(b"Computed in ? s", data) if p.name == "report.html" else data


def recorded() -> dict[str, dict[str, str]]:
    return json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}


def mismatch(name: str, out: Path) -> str | None:
    """None when `out` matches the record of scenario `name`; else what differs and what to do."""
    want = recorded().get(name)
    got = output_hashes(out)
    if want == got:
        return None
    diff = sorted(k for k in set(want or {}) | set(got) if (want or {}).get(k) != got.get(k))
    return (f"golden outputs of '{name}' changed: {', '.join(diff) or 'no record'}. If the "
            "change is intended (a fidelity or bug fix), rerun `python benchmarks/golden.py "
            "--update` and name the change in the commit; a refactoring must keep them identical")


def run_one(name: str, scenario: Path, flags: tuple[str, ...], tmp: Path) -> Path:
    out = tmp / name
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(scenario), "--out", str(out),
                        *flags], capture_output=True, text=True, cwd=REPO, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{name}: fleetsim run failed ({p.returncode}): {p.stderr.strip()}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true", help="rewrite benchmarks/golden.json")
    ap.add_argument("--only", nargs="*", help="golden names to run (default: all)")
    args = ap.parse_args(argv)
    todo = {k: v for k, v in scenarios().items() if not args.only or k in args.only}
    record, bad = recorded(), []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (scn, flags) in todo.items():
            t0 = time.perf_counter()
            out = run_one(name, scn, flags, Path(tmp))
            why = None if args.update else mismatch(name, out)
            record[name] = output_hashes(out)
            print(f"{name}: {'updated' if args.update else why or 'identical'} "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)
            if why:
                bad.append(name)
    if args.update:
        GOLDEN.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
