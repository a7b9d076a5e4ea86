"""`make test` part two: every notebook with the smoke profile under nbval (lax mode).

Each notebook is prepared by papermill with ``profile="smoke"`` (parameters injected, nothing
run) into ``runs/nbtest/``, then executed once by ``pytest --nbval-lax``, which fails on any
error and compares the outputs of cells marked ``# NBVAL_CHECK_OUTPUT`` (deterministic and
profile-independent: shapes, parameter counts, published numbers) with those stored in the
notebook."""
from __future__ import annotations

import subprocess
import sys

from rscc.experiments.reproduce import notebooks, run_notebook
from rscc.paths import REPO_ROOT


def main(argv: list[str] | None = None) -> int:
    only = argv if argv is not None else sys.argv[1:]
    out_dir = REPO_ROOT / "runs" / "nbtest"
    prepared = [run_notebook(nb, out_dir, {"profile": "smoke"}, prepare_only=True) for nb in notebooks(only or None)]
    if not prepared:
        print("nbtest: no notebooks found")
        return 1
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
           "--nbval-current-env", *map(str, prepared)]
    return subprocess.call(cmd, cwd=REPO_ROOT)


if __name__ == "__main__":
    sys.exit(main())
