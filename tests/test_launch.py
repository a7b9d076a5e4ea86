"""Launch and citation files: CITATION.cff has CFF 1.2.0's required keys, only the tests run
offline, every Colab/Binder/GitHub link agrees with rscc/links.py's REPO_URL, the notebooks'
Colab cell does nothing elsewhere and keeps Colab's torch/numpy/pandas, and the Binder files
parse, agree with pyproject.toml's pins and install rscc as postBuild says."""
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from rscc import links
from rscc.links import REPO_URL
from rscc.paths import REPO_ROOT

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
FORK = "https://github.com/someone-else/rscc-fork"


def test_citation_cff_has_the_required_keys_and_cites_the_paper():
    cff = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors"} <= set(cff)
    paper = cff["preferred-citation"]
    assert {"type", "title", "authors"} <= set(paper)
    assert [a["family-names"] for a in paper["authors"]] == ["Ferrod", "Di Caro", "Ienco"]
    assert "2406.13424" in str(paper["identifiers"])
    assert cff["repository-code"] == REPO_URL


def test_license_is_mit():
    assert (REPO_ROOT / "LICENSE").read_text().startswith("MIT License")


def _dry_run(*args: str) -> str:
    env = {"PATH": "/usr/bin:/bin"}  # no HF_* variables inherited from the test session
    return subprocess.run(["make", "-n", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                          env=env, check=True).stdout


def test_the_paper_profile_does_not_force_offline_mode():
    out = _dry_run("reproduce", "PROFILE=paper", "DATA=/levir-cc", "STAMP=/dev/null")
    line = [row for row in out.splitlines() if "rscc.experiments.reproduce" in row][0]
    assert "OFFLINE" not in line


def test_the_tests_run_offline():
    out = _dry_run("test-unit", "STAMP=/dev/null")
    assert "HF_HUB_OFFLINE=1" in out


# ----------------------------------------------------------------------------- launch links
def test_every_launch_link_in_readme_notebooks_and_citation_agrees_with_repo_url():
    assert links.check(REPO_ROOT) == {}
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(links.ANY_LAUNCH_URL.findall(readme)) >= 2 * len(NOTEBOOKS)  # the links are there to check


def test_the_readme_opens_every_notebook_on_colab_and_binder():
    readme = (REPO_ROOT / "README.md").read_text()
    for path in NOTEBOOKS:
        assert links.colab_url(f"notebooks/{path.name}") in readme, path.name
        assert links.binder_url(f"notebooks/{path.name}") in readme, path.name


def test_each_notebook_has_badges_for_itself_under_its_title_and_repo_url_in_its_colab_cell():
    for path in NOTEBOOKS:
        cells = nbformat.read(path, as_version=4).cells
        assert cells[0].source.startswith("# ") and links.badges(f"notebooks/{path.name}") in cells[0].source
        assert f'REPO_URL = "{REPO_URL}"' in cells[1].source, path.name


def test_a_placeholder_owner_or_another_repository_is_a_disagreement():
    text = ("[a](https://colab.research.google.com/github/<owner>/rscc/blob/main/notebooks/x.ipynb) "
            "https://github.com/other/repo https://mybinder.org/v2/gh/rscc-companion/rscc/dev?labpath=x "
            "https://github.com/Chen-Yang-Liu/LEVIR-CC-Dataset https://mybinder.org/badge_logo.svg")
    assert links.disagreements(text) == [
        "https://colab.research.google.com/github/<owner>/rscc/blob/main/notebooks/x.ipynb",
        "https://github.com/other/repo", "https://mybinder.org/v2/gh/rscc-companion/rscc/dev?labpath=x"]


def test_links_update_rewrites_a_copy_to_a_forks_address_and_back_byte_for_byte(tmp_path):
    (tmp_path / "notebooks").mkdir()
    originals = {REPO_ROOT / "README.md": tmp_path / "README.md", REPO_ROOT / "CITATION.cff": tmp_path / "CITATION.cff",
                 **{path: tmp_path / "notebooks" / path.name for path in NOTEBOOKS}}
    for source, copy in originals.items():
        shutil.copyfile(source, copy)

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "rscc.links", *args, "--root", str(tmp_path)],
                              capture_output=True, text=True, cwd=REPO_ROOT)

    assert cli("--check", "--repo-url", FORK).returncode == 1
    done = cli("--update", "--repo-url", FORK)
    assert done.returncode == 0 and done.stdout.count("updated ") == len(originals)
    assert cli("--check", "--repo-url", FORK).returncode == 0
    assert links.check(tmp_path, FORK) == {}
    copied = [json.loads(copy.read_text()) for copy in originals.values() if copy.suffix == ".ipynb"]
    assert all(FORK in "".join(nb["cells"][1]["source"]) for nb in copied)  # still notebooks, new address
    readme = (tmp_path / "README.md").read_text()
    assert "colab.research.google.com/github/someone-else/rscc-fork/blob/main/notebooks/" in readme
    assert "https://github.com/Chen-Yang-Liu/LEVIR-CC-Dataset" in readme  # foreign links untouched
    assert yaml.safe_load((tmp_path / "CITATION.cff").read_text())["repository-code"] == FORK
    assert cli("--update").returncode == 0  # back to REPO_URL: only the addresses had changed
    assert all(copy.read_bytes() == source.read_bytes() for source, copy in originals.items())


def test_links_cli_refuses_an_address_that_is_not_a_github_repository(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rscc.links", "--update", "--repo-url", "https://example.org/x",
                          "--root", str(tmp_path)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode != 0 and "REPO_URL must look like https://github.com/OWNER/NAME" in out.stderr


# ----------------------------------------------------------------------------- the Colab cell
def colab_cell(path: Path) -> str:
    return nbformat.read(path, as_version=4).cells[1].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_the_colab_cell_uses_no_shell_or_magic_and_no_editable_install(path):
    source = colab_cell(path)
    assert 'if "google.colab" in sys.modules:' in source
    assert not [line for line in source.splitlines() if line.lstrip().startswith(("!", "%"))]
    assert "-e" not in re.findall(r'"(-[a-z])"', source) and "pip install -e" not in source
    assert "colab_setup(" in source


def test_the_colab_cell_does_nothing_outside_colab(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for path in NOTEBOOKS:
        namespace = {}
        path_before, modules_before = list(sys.path), set(sys.modules)
        exec(compile(colab_cell(path), path.name, "exec"), namespace)
        assert set(namespace) - {"__builtins__"} == {"sys"}, path.name
        assert sys.path == path_before and Path.cwd() == tmp_path and set(sys.modules) == modules_before
    assert list(tmp_path.iterdir()) == []


def test_the_colab_cell_body_runs_only_with_google_colab_imported(tmp_path, monkeypatch):
    """With a stand-in google.colab module, the cell clones, calls colab_setup and changes folder."""
    calls = []
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    monkeypatch.setattr(links, "colab_setup", lambda clone: calls.append(("colab_setup", clone)))
    monkeypatch.setattr(os.path, "isdir", lambda p: False)
    monkeypatch.setattr(os, "chdir", lambda p: calls.append(("chdir", p)))
    monkeypatch.setattr(sys, "path", list(sys.path))
    exec(compile(colab_cell(NOTEBOOKS[0]), "cell", "exec"), {})
    assert calls == [["git", "clone", "-q", "--depth", "1", REPO_URL, "/content/rscc"],
                     ("colab_setup", "/content/rscc"), ("chdir", "/content/rscc/notebooks")]


def test_rscc_links_imports_only_the_standard_library():
    """The Colab cell imports rscc.links from the fresh clone, before any dependency is installed."""
    code = ("import sys, rscc.links; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'numpy', 'pandas', 'yaml', 'packaging', 'nbformat'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert out.stdout.strip() == "[]"


def _fake_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "rscc"
    (clone / "binder").mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / links.COLAB_REQUIREMENTS, clone / links.COLAB_REQUIREMENTS)
    shutil.copyfile(REPO_ROOT / links.NO_DEPS_REQUIREMENTS, clone / links.NO_DEPS_REQUIREMENTS)
    return clone


def test_colab_setup_keeps_colabs_torch_numpy_pandas_and_installs_rscc_without_e(tmp_path, monkeypatch):
    from importlib import metadata

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    clone, commands = _fake_clone(tmp_path), []
    replaced = links.colab_setup(clone, run=lambda cmd, check: commands.append(cmd), loaded=dict)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    constraints = commands[0][-1]
    assert commands == [[*pip, "-r", str(clone / "requirements-colab.txt"), "-c", constraints],
                        [*pip, "--no-deps", str(clone)],
                        [*pip, "--no-deps", "-r", str(clone / "binder/requirements-no-deps.txt")]]
    assert Path(constraints).read_text().split() == [f"{n}=={metadata.version(n)}" for n in links.COLAB_KEEPS]
    assert replaced == [] and sys.path[0] == str(clone) and os.environ["PYTHONPATH"] == str(clone)


def test_colab_setup_asks_for_a_restart_only_when_an_imported_package_was_replaced(tmp_path, monkeypatch, capsys):
    from importlib import metadata

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    clone = _fake_clone(tmp_path)
    numpy = {"numpy": metadata.version("numpy")}
    assert links.colab_setup(clone, run=lambda cmd, check: None, loaded=lambda: numpy) == []
    assert capsys.readouterr().out == ""
    assert links.colab_setup(clone, run=lambda cmd, check: None, loaded=lambda: {"numpy": "0.0.1"}) == ["numpy"]
    assert "restart the runtime" in capsys.readouterr().out


# ----------------------------------------------------------------------------- pins
def _pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        req = Requirement(line)
        pins[canonicalize_name(req.name)] = str(next(iter(req.specifier)).version)
    return pins


def _requirements(path: Path) -> dict[str, Requirement]:
    return {canonicalize_name(Requirement(line).name): Requirement(line) for line in links.requirement_lines(path)}


def _runtime_names() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}


def _environment_yml_pip(path: Path) -> list[str]:
    env = yaml.safe_load(path.read_text())
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


@pytest.mark.parametrize("name", ["binder/requirements.txt", "requirements-colab.txt",
                                  "binder/requirements-no-deps.txt", "environment.yml"])
def test_every_pin_of_a_launch_file_is_pyprojects(name):
    path = REPO_ROOT / name
    reqs = ({canonicalize_name(Requirement(d).name): Requirement(d) for d in _environment_yml_pip(path)}
            if path.suffix == ".yml" else _requirements(path))
    pins, no_deps = _pyproject_pins(), _no_deps_pins()
    assert reqs
    for key, req in reqs.items():
        for spec in req.specifier:
            assert spec.operator == "==", f"{name}: {req}"
            expected = pins.get(key, no_deps.get(key))
            assert expected is not None, f"{name}: {req.name} is not a pyproject.toml or Makefile package"
            assert Version(spec.version).public == expected, f"{name}: {req} but pyproject.toml pins {expected}"


def test_binder_requirements_hold_every_runtime_dependency_with_a_cpu_torch():
    path = REPO_ROOT / "binder/requirements.txt"
    reqs = _requirements(path)
    assert set(reqs) == _runtime_names()
    for name in ("torch", "torchvision"):
        assert Version(next(iter(reqs[name].specifier)).version).local == "cpu"
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in path.read_text().splitlines()


def test_binder_runtime_and_apt_files_give_python_3_11_and_java():
    assert (REPO_ROOT / "binder/runtime.txt").read_text().strip() == "python-3.11"
    apt = links.requirement_lines(REPO_ROOT / "binder/apt.txt")
    assert any(re.fullmatch(r"(default|openjdk-\d+)-jre(-headless)?", p) for p in apt), apt


def test_colab_requirements_leave_torch_numpy_pandas_to_colab():
    reqs = _requirements(REPO_ROOT / "requirements-colab.txt")
    assert not set(reqs) & set(links.COLAB_KEEPS)
    server_and_tests = {"jupyterlab", "ipykernel", "papermill", "nbval"}
    assert set(reqs) == _runtime_names() - set(links.COLAB_KEEPS) - server_and_tests
    assert not reqs["ipywidgets"].specifier  # Colab's own widgets stay


def _no_deps_pins() -> dict[str, str]:
    line = next(row for row in (REPO_ROOT / "Makefile").read_text().splitlines() if row.startswith("NO_DEPS_PACKAGES"))
    return {canonicalize_name(Requirement(r).name): str(next(iter(Requirement(r).specifier)).version)
            for r in line.split(":=", 1)[1].split()}


def test_the_no_deps_packages_are_the_makefiles():
    reqs = _requirements(REPO_ROOT / "binder/requirements-no-deps.txt")
    assert {k: str(next(iter(r.specifier)).version) for k, r in reqs.items()} == _no_deps_pins()


def test_the_root_environment_yml_installs_nothing_from_the_checkout():
    assert not [d for d in _environment_yml_pip(REPO_ROOT / "environment.yml") if d.startswith(("-e", ".", "/"))]


def test_postbuild_installs_rscc_and_the_weight_packages_without_dependencies(tmp_path):
    """postBuild run with `pip` replaced by a recorder on PATH: the commands it would run, and where."""
    postbuild = REPO_ROOT / "binder/postBuild"
    assert os.access(postbuild, os.X_OK)
    log = tmp_path / "pip.log"
    shim = tmp_path / "bin" / "pip"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nprintf "%s|%s\\n" "$PWD" "$*" >> {log}\n')
    shim.chmod(0o755)
    env = {"PATH": f"{shim.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run([str(postbuild)], cwd=tmp_path, env=env, check=True, capture_output=True)
    assert log.read_text().splitlines() == [
        f"{REPO_ROOT}|install --no-cache-dir --no-deps .",
        f"{REPO_ROOT}|install --no-cache-dir --no-deps -r binder/requirements-no-deps.txt"]
