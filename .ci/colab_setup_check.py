"""Run the notebooks' set-up cells as on a fresh Colab runtime; prove they change no version.

Run in the Colab-like virtualenv (.ci/colab-pins.txt) with LESIONLIB_INSTALL_SOURCE pointing at
the checkout. Each distinct set-up cell runs once, on an environment without lesionlib; every
package installed before must keep its version afterwards, and lesionlib must then import.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = (
    "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version "
    "for d in m.distributions() if d.metadata['Name']}))"
)


def installed() -> dict[str, str]:
    """Name (normalised) -> version of every distribution in this environment."""
    # -I: this environment only, not a lesionlib.egg-info that a build left in the working folder
    out = subprocess.run([sys.executable, "-I", "-c", SNAPSHOT], capture_output=True, text=True)
    return {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in json.loads(out.stdout).items()}


def setup_cells() -> dict[str, list[str]]:
    """Set-up cell source -> the notebooks that have it."""
    cells: dict[str, list[str]] = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        sources = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        (setup,) = [s for s in sources if "COURSE_SOURCE" in s]
        cells.setdefault(setup, []).append(path.name)
    return cells


def main() -> int:
    if not os.environ.get("LESIONLIB_INSTALL_SOURCE"):
        sys.exit(
            "set LESIONLIB_INSTALL_SOURCE (e.g. file://$PWD) so the set-up installs this checkout"
        )
    failures = 0
    for source, notebooks in setup_cells().items():
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "lesionlib"])
        before = installed()
        fresh = {**os.environ, "PIP_NO_CACHE_DIR": "1"}  # a fresh runtime: no wheel built before
        subprocess.run(
            [sys.executable, "-c", source], check=True, cwd=ROOT / "notebooks", env=fresh
        )
        after = installed()
        changed = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
        added = sorted(f"{k}=={after[k]}" for k in after.keys() - before.keys())
        print(f"set-up cell of {', '.join(notebooks)}:")
        print(f"  added:   {', '.join(added) or 'nothing'}")
        print(f"  changed: {changed or 'nothing'} ({len(before)} packages checked)")
        if changed or "lesionlib" not in after:
            failures += 1
    decoder = "from lesionlib.train import print_environment; print_environment()"
    subprocess.run([sys.executable, "-I", "-c", decoder], check=True)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
