"""Launch and citation files: CITATION.cff has CFF 1.2.0's required keys, and only the tests run offline."""
import subprocess

import yaml

from rscc.links import REPO_URL
from rscc.paths import REPO_ROOT


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
    line = [l for l in out.splitlines() if "rscc.experiments.reproduce" in l][0]
    assert "OFFLINE" not in line


def test_the_tests_run_offline():
    out = _dry_run("test-unit", "STAMP=/dev/null")
    assert "HF_HUB_OFFLINE=1" in out
