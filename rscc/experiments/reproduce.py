"""`make reproduce`: run the numbered notebooks in order with papermill.

Executed copies go to ``runs/notebooks/``; the notebooks themselves write ``figures/`` and
``results/``. On the default run (the quick profile with the notebooks' own parameters) each
executed notebook is also published: written back over ``notebooks/NN_*.ipynb`` with its outputs,
so the repository page, nbviewer and Colab show the results that ``figures/`` and ``results/`` hold
(:func:`publish`). A failing cell stops the run and names the notebook and the cell. Trainings whose
saved configuration and metrics are complete are reused, so an interrupted run restarts where it
stopped.

Before the notebooks, every training they make with their own parameters is trained at once
(:func:`rscc.experiments.study.train_study`): two single-thread trainings at a time, the longest
first, so that both cores stay busy while the main run trains; the notebooks then reuse them.
With every run present the notebooks only evaluate and plot, so they then run two at a time
(each in its own kernel), the collector (06) after the rest. ``--only`` skips the trainings, and
its notebooks run one after another: they train what they need themselves, and two of them
(03 and 04 share runs) must not train the same run at once."""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from rscc.errors import RsccError
from rscc.experiments.profiles import get_profile
from rscc.paths import REPO_ROOT, atomic_write

PUBLISHED_PROFILE = "quick"  # the profile whose outputs the committed notebooks carry
MAX_FIGURE_WIDTH = 1000  # px of a published inline figure
MAX_PNG_BYTES = 200_000  # a larger inline PNG (image pairs, attention over photos) is published as JPEG

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


# notebooks whose subject is the synthetic generator itself (data size, caption recurrence):
# skipped on LEVIR-CC (the paper profile), which has one size and one recurrence
SYNTHETIC_ONLY = {"08": "varies the synthetic set's size", "09": "varies the synthetic captions' recurrence"}
COLLECTOR = "06"  # notebook 06 shows every study notebook's tables, so it runs after all of them
NOTEBOOK_WORKERS = 2  # notebooks executed at a time after every training is done (one kernel each)


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in the order they run: by number, with the collector (06) last."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"), key=lambda nb: (nb.name[:2] == COLLECTOR, nb.name))
    if only:
        found = [nb for nb in found if nb.name[:2] in only]
    return found


def run_notebook(path: Path, out_dir: Path, parameters: dict, prepare_only: bool = False,
                 progress: bool = True) -> Path:
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name
    try:
        pm.execute_notebook(
            str(path), str(target), parameters=parameters, cwd=str(path.parent), kernel_name="python3",
            progress_bar=progress and not prepare_only, prepare_only=prepare_only,
        )
    except pm.PapermillExecutionError as exc:
        raise RsccError(
            f"{path.name}: cell {exc.exec_count} failed with {exc.ename}: {exc.evalue} "
            f"(executed copy with the traceback: {target})"
        ) from None
    return target


def _modest(data: dict) -> dict:
    """An output's ``image/png`` at modest size: at most MAX_FIGURE_WIDTH px wide, and as a JPEG
    (quality 85) when the PNG is still over MAX_PNG_BYTES (photo-like content compresses badly)."""
    import base64
    import io

    from PIL import Image

    png = data.get("image/png")
    if not isinstance(png, str):
        return data
    raw = base64.b64decode(png)
    image = Image.open(io.BytesIO(raw))
    if image.width <= MAX_FIGURE_WIDTH and len(raw) <= MAX_PNG_BYTES:
        return data
    if image.width > MAX_FIGURE_WIDTH:
        image = image.resize((MAX_FIGURE_WIDTH, round(image.height * MAX_FIGURE_WIDTH / image.width)), Image.LANCZOS)
    out, key = io.BytesIO(), "image/png"
    image.save(out, format="PNG", optimize=True)
    if out.tell() > MAX_PNG_BYTES:
        out, key = io.BytesIO(), "image/jpeg"
        image.convert("RGB").save(out, format="JPEG", quality=85, optimize=True)
    rest = {k: v for k, v in data.items() if k != "image/png"}
    return {key: base64.b64encode(out.getvalue()).decode("ascii"), **rest}


def publish(executed: Path, notebook: Path) -> int:
    """Write the outputs of ``executed`` (a papermill run of ``notebook``) into ``notebook``: the
    cell papermill injected is dropped (the notebook keeps its own parameters cell) and so are
    papermill's per-cell timings, so a rerun changes the file only where a result changed; inline
    figures are published at modest size (:func:`_modest`) and saved widget state is dropped.
    Returns the size of the written notebook in bytes."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            if "data" in output:
                output["data"] = _modest(output["data"])
                output.get("metadata", {}).pop("image/png", None)
    nb.metadata.pop("papermill", None)
    # the saved ipywidgets state (notebook 07's explorer: 1.3 MB of thumbnails) is dropped: the
    # explorer needs a kernel anyway, and its static outputs (tables, figures) stay
    nb.metadata.pop("widgets", None)
    with atomic_write(notebook) as f:
        nbformat.write(nb, f)
    return notebook.stat().st_size


def _say(line: str) -> None:
    """One line to stdout in one write, so that two notebooks' lines never interleave."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _run_timed(nb: Path, out_dir: Path, params: dict, profile: str, progress: bool) -> tuple[Path, float]:
    start = time.time()
    _say(f"==> {nb.name} ({profile} profile)")
    return run_notebook(nb, out_dir, params, progress=progress), time.time() - start


def run_notebooks(group: list[Path], out_dir: Path, params: dict, profile: str, published: bool,
                  workers: int = 1) -> None:
    """Execute ``group`` (:func:`run_notebook`), ``workers`` at a time in order, each published as
    it finishes (:func:`publish`) when ``published``. The first failure stops the rest (those
    already running finish) and is raised."""
    def finished(nb: Path, executed: Path, seconds: float) -> None:
        _say(f"    {nb.name} done in {seconds:.0f} s -> {executed}")
        if published:
            size = publish(executed, nb)
            _say(f"    published with its outputs -> notebooks/{nb.name} ({size / 1e3:.0f} kB)")

    if workers <= 1 or len(group) <= 1:
        for nb in group:
            finished(nb, *_run_timed(nb, out_dir, params, profile, progress=True))
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:  # papermill runs each kernel in its own process
        futures = {pool.submit(_run_timed, nb, out_dir, params, profile, False): nb for nb in group}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: futures[f].name):
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()
                finished(futures[future], *future.result())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rscc.experiments.reproduce", description=__doc__)
    parser.add_argument("--profile", default="quick", help="smoke | quick | paper")
    parser.add_argument("--data", default=None, help="LEVIR-CC root (paper profile)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. 03 04")
    args = parser.parse_args(argv)
    try:
        get_profile(args.profile, data=args.data, device=args.device)  # fail fast on a missing dataset
        params = {"profile": args.profile, "data": args.data, "device": args.device}
        out_dir = REPO_ROOT / "runs" / "notebooks"
        published = args.profile == PUBLISHED_PROFILE and args.data is None
        if not args.only:
            from rscc.device import machine
            from rscc.experiments.study import train_study

            start = time.time()
            profile = get_profile(args.profile, data=args.data, device=args.device)
            print(f"==> every training of the study ({args.profile} profile), before the notebooks", flush=True)
            print("    on " + ", ".join(f"{k} {v}" for k, v in machine().items() if k != "threads"), flush=True)
            done = train_study(profile, synthetic_only=args.data is None)
            print(f"    {len(done)} trainings complete in {time.time() - start:.0f} s", flush=True)
        todo = []
        for nb in notebooks(args.only):
            if args.data is not None and nb.name[:2] in SYNTHETIC_ONLY:
                print(f"==> {nb.name}: skipped on LEVIR-CC (it {SYNTHETIC_ONLY[nb.name[:2]]})", flush=True)
            else:
                todo.append(nb)
        workers = 1 if args.only else NOTEBOOK_WORKERS
        for group in ([nb for nb in todo if nb.name[:2] != COLLECTOR], [nb for nb in todo if nb.name[:2] == COLLECTOR]):
            run_notebooks(group, out_dir, params, args.profile, published, workers)
    except RsccError as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
