"""make reproduce publishes the executed notebooks: outputs kept, papermill's injection and timings not."""
import nbformat

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
    monkeypatch.setattr(reproduce, "run_notebook", lambda nb, out, params: ran.append(nb.name[:2]) or nb)
    monkeypatch.setattr(reproduce, "publish", lambda executed, nb: 0)
    assert reproduce.main(["--profile", "paper", "--data", str(tmp_path), "--only", "07", "08", "09"]) == 0
    assert ran == ["07"] and "08_data_scaling.ipynb: skipped on LEVIR-CC" in capsys.readouterr().out
