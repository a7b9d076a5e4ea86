"""make reproduce publishes the executed notebooks: outputs kept, papermill's injection and timings not."""
import nbformat
import pytest

from rscc.experiments.nbtest import MARK
from rscc.experiments.reproduce import publish, run_notebook


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('n = 2')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# demo"), params, nbformat.v4.new_code_cell("print(n * 21)"),
                nbformat.v4.new_code_cell(f"{MARK}\nprint('fixed')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_published_notebook_has_the_outputs_and_its_own_parameters_only(tmp_path):
    source = _notebook(tmp_path / "01_demo.ipynb")
    executed = run_notebook(source, tmp_path / "executed", {"n": 2})
    done = nbformat.read(executed, as_version=4)
    done.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    nbformat.write(done, executed)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nbformat.read(executed, 4).cells)
    size = publish(executed, source)
    nb = nbformat.read(source, as_version=4)
    assert size == source.stat().st_size
    assert [c.source for c in nb.cells] == ["# demo", "n = 2", "print(n * 21)", f"{MARK}\nprint('fixed')"]
    assert nb.cells[2].outputs[0]["text"] == "42\n"
    assert "papermill" not in nb.metadata and not any("papermill" in c.metadata for c in nb.cells)
    assert "widgets" not in nb.metadata
    nbformat.validate(nb)


def test_refresh_keeps_the_published_outputs_of_unmarked_cells(tmp_path, monkeypatch):
    from rscc.experiments import nbtest

    source = _notebook(tmp_path / "01_demo.ipynb")
    publish(run_notebook(source, tmp_path / "executed", {"n": 2}), source)
    monkeypatch.setattr(nbtest, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(nbtest, "notebooks", lambda only=None: [source])
    monkeypatch.setattr(nbtest, "run_notebook", lambda path, out, params: run_notebook(path, out, {"n": 2}))
    nbtest.refresh_checked_outputs()
    nb = nbformat.read(source, as_version=4)
    assert nb.cells[2].outputs[0]["text"] == "42\n" and nb.cells[3].outputs[0]["text"] == "fixed\n"


def test_large_figures_are_published_at_modest_size(tmp_path):
    import base64
    import io

    import numpy as np
    from PIL import Image

    from rscc.experiments.reproduce import MAX_FIGURE_WIDTH, MAX_PNG_BYTES, _modest

    def png(array):
        out = io.BytesIO()
        Image.fromarray(array).save(out, format="PNG")
        return base64.b64encode(out.getvalue()).decode("ascii")

    small = {"image/png": png(np.zeros((50, 80, 3), np.uint8)), "text/plain": "<Figure>"}
    assert _modest(small) == small
    noise = np.random.default_rng(0).integers(0, 255, (900, 1500, 3), dtype=np.uint8)  # photo-like: large PNG
    out = _modest({"image/png": png(noise), "text/plain": "<Figure>"})
    assert set(out) == {"image/jpeg", "text/plain"}
    image = Image.open(io.BytesIO(base64.b64decode(out["image/jpeg"])))
    assert image.width == MAX_FIGURE_WIDTH and image.height == 600
    assert len(base64.b64decode(out["image/jpeg"])) < 3 * MAX_PNG_BYTES


def test_notebook_06_runs_after_every_study_notebook():
    from rscc.experiments.reproduce import notebooks

    order = [nb.name[:2] for nb in notebooks()]
    assert order[-1] == "06" and order[:-1] == sorted(order[:-1])
    assert [nb.name[:2] for nb in notebooks(["06", "01"])] == ["01", "06"]


def test_the_synthetic_only_notebooks_are_skipped_on_levir_cc(tmp_path, monkeypatch, capsys):
    from rscc.experiments import reproduce

    ran = []
    monkeypatch.setattr(reproduce, "get_profile", lambda *a, **k: None)
    monkeypatch.setattr(reproduce, "run_notebook", lambda nb, out, params, **kw: ran.append(nb.name[:2]) or nb)
    monkeypatch.setattr(reproduce, "publish", lambda executed, nb: 0)
    assert reproduce.main(["--profile", "paper", "--data", str(tmp_path), "--only", "07", "08", "09"]) == 0
    assert ran == ["07"] and "08_data_scaling.ipynb: skipped on LEVIR-CC" in capsys.readouterr().out


def test_run_notebooks_runs_two_at_a_time_publishes_each_and_stops_on_a_failure(tmp_path, monkeypatch):
    import threading
    import time

    from rscc.errors import RsccError
    from rscc.experiments import reproduce

    running, most, started, published = [0], [0], [], []
    lock = threading.Lock()
    gates = {}  # notebook name -> an event it waits for instead of sleeping (the order, not timing)

    def fake_run(path, out_dir, params, prepare_only=False, progress=True):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            started.append(path.name)
        if path.name in gates:
            gates[path.name].wait(timeout=10)
        else:
            time.sleep(0.6 if path.name.startswith("03") else 0.1)
        with lock:
            running[0] -= 1
        if path.name.startswith("02"):
            raise RsccError(f"{path.name}: cell 1 failed")
        return out_dir / path.name

    monkeypatch.setattr(reproduce, "run_notebook", fake_run)
    def fake_publish(executed, nb):
        published.append(nb.name)
        if nb.name == "04_x.ipynb":  # 03 finishes only once 04, started after 01, is published
            gates["03_x.ipynb"].set()
        return 1

    monkeypatch.setattr(reproduce, "publish", fake_publish)
    gates["03_x.ipynb"] = threading.Event()
    group = [tmp_path / f"0{i}_x.ipynb" for i in (1, 3, 4)]
    reproduce.run_notebooks(group, tmp_path, {}, "smoke", published=True, workers=2)
    assert most[0] == 2 and sorted(started) == [p.name for p in group]
    assert published == ["01_x.ipynb", "04_x.ipynb", "03_x.ipynb"]  # each as it finishes, not all at the end

    started.clear()
    gates.clear()
    failing = [tmp_path / f"0{i}_x.ipynb" for i in (1, 2, 3, 4, 5)]
    with pytest.raises(RsccError, match="02_x"):
        reproduce.run_notebooks(failing, tmp_path, {}, "smoke", published=False, workers=2)
    assert "05_x.ipynb" not in started  # queued behind the failure: cancelled
