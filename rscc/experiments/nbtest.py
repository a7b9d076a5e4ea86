"""`make test` part two: every notebook with the smoke profile under nbval (lax mode).

Each notebook is prepared by papermill with ``profile="smoke"`` (parameters injected, nothing
run) into ``runs/nbtest/``, then executed once by ``pytest --nbval-lax``, which fails on any
error and compares the outputs of cells marked ``# NBVAL_CHECK_OUTPUT`` (deterministic and
profile-independent: shapes, parameter counts, published numbers) with those stored in the
notebook. ``python -m rscc.experiments.nbtest --refresh [NN ...]`` stores those outputs."""
from __future__ import annotations

import subprocess
import sys

from rscc.experiments.reproduce import notebooks, run_notebook
from rscc.paths import REPO_ROOT

MARK = "# NBVAL_CHECK_OUTPUT"


def refresh_checked_outputs(only: list[str] | None = None) -> None:
    """Execute each notebook with the smoke profile and store, in the notebook itself, the outputs
    of the cells marked for nbval; every other cell keeps the outputs it has (the published
    quick-profile results, see reproduce.publish)."""
    import nbformat

    out_dir = REPO_ROOT / "runs" / "nbtest-refresh"
    for nb_path in notebooks(only or None):
        executed = nbformat.read(run_notebook(nb_path, out_dir, {"profile": "smoke"}), as_version=4)
        checked = [c for c in executed.cells if c.cell_type == "code" and c.source.startswith(MARK)]
        source = nbformat.read(nb_path, as_version=4)
        marked = [c for c in source.cells if c.cell_type == "code" and c.source.startswith(MARK)]
        for cell, done in zip(marked, checked):
            cell.outputs, cell.execution_count = done.outputs, done.execution_count
        nbformat.write(source, nb_path)
        print(f"{nb_path.name}: {len(marked)} checked cell(s) refreshed")


def main(argv: list[str] | None = None) -> int:
    only = argv if argv is not None else sys.argv[1:]
    if only and only[0] == "--refresh":
        refresh_checked_outputs(only[1:])
        return 0
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
