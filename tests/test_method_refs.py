"""Every "METHOD §n.m" in the repository names a section of docs/METHOD.md, and no reference to
the external method notes the code used to cite ("SPEC" followed by a section sign) is left."""
import json
import os
import re
from pathlib import Path

from rscc.paths import REPO_ROOT

METHOD = REPO_ROOT / "docs" / "METHOD.md"
SKIP_DIRS = {".git", ".venv", "runs", ".cache", "node_modules", "__pycache__", ".ipynb_checkpoints", "build", "dist"}
SUFFIXES = {".py", ".md", ".ipynb", ".yaml", ".yml", ".txt", ".toml", ".csv", ".cfg", ".cff", ".sh"}
EXTRA_FILES = {"Makefile", "postBuild", "run"}

NUMBER = r"\d+(?:\.\d+)*"
# "METHOD §2", "docs/METHOD.md §3.2", "METHOD §2.2–2.4", "METHOD §2, §4" (the text may wrap)
METHOD_REF = re.compile(rf"METHOD(?:\.md)?\s*(§\s*{NUMBER}(?:\s*[–-]\s*{NUMBER})?(?:\s*,\s*§\s*{NUMBER})*)")
# inside METHOD.md a bare "§3.3" is a reference to the same text
BARE_REF = re.compile(rf"§\s*({NUMBER}(?:\s*[–-]\s*{NUMBER})?)")
OLD_REF = re.compile(r"\bSPEC\s*§")
HEADING = re.compile(rf"^#{{2,4}}\s+({NUMBER})\.?\s", re.MULTILINE)
ANCHOR = re.compile(r'<a id="s([\d.]+)"></a>\s*\n#{2,4}\s+([\d.]+?)\.?\s')


def sections() -> set[str]:
    return set(HEADING.findall(METHOD.read_text(encoding="utf-8")))


def numbers(reference: str) -> list[str]:
    return re.findall(NUMBER, reference)


def readable_text(path: Path) -> str:
    """A file's text as a reader sees it: a notebook's cell sources and text outputs, joined."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".ipynb":
        return text
    parts = []
    for cell in json.loads(text).get("cells", []):
        parts.append("".join(cell.get("source", [])))
        for output in cell.get("outputs", []):
            parts.append("".join(output.get("text", [])))
            for value in output.get("data", {}).values():
                parts.append("".join(value) if isinstance(value, list) else str(value))
    return "\n".join(parts)


def repository_files() -> list[Path]:
    """The repository's text files, without virtual environments, run outputs and this file (whose
    examples of broken references are deliberate)."""
    found = []
    for folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if (path.suffix in SUFFIXES or name in EXTRA_FILES) and path != Path(__file__).resolve():
                found.append(path)
    return found


def broken_references(text: str, known: set[str]) -> list[str]:
    return [m.group(0) for m in METHOD_REF.finditer(text) if any(n not in known for n in numbers(m.group(1)))]


def test_method_md_numbers_its_sections_with_matching_anchors():
    text = METHOD.read_text(encoding="utf-8")
    known = sections()
    assert {"1", "2", "2.2", "3", "3.3", "5", "6.2", "6.3", "7", "8"} <= known
    anchored = ANCHOR.findall(text)
    assert all(anchor == number for anchor, number in anchored)
    assert {number for _, number in anchored} == known  # every section can be linked as #s<n>


def test_the_checker_reports_a_reference_to_a_missing_section():
    known = {"2", "2.2", "2.4"}
    assert broken_references("see METHOD §2.2–2.4 and docs/METHOD.md §2", known) == []
    assert broken_references("see METHOD §2.3", known) == ["METHOD §2.3"]
    assert broken_references("(METHOD §2, §9)", known) == ["METHOD §2, §9"]
    assert broken_references("wrapped (METHOD\n§2.9)", known) == ["METHOD\n§2.9"]


def test_every_method_reference_in_the_repository_names_an_existing_section():
    known = sections()
    broken, count = {}, 0
    for path in repository_files():
        text = readable_text(path)
        count += len(METHOD_REF.findall(text))
        bad = broken_references(text, known)
        if bad:
            broken[str(path.relative_to(REPO_ROOT))] = bad
    assert broken == {}
    assert count >= 60  # the code, tests and notebooks cite the method text throughout


def test_method_md_cites_only_its_own_sections():
    known = sections()
    cited = {n for m in BARE_REF.finditer(METHOD.read_text(encoding="utf-8")) for n in numbers(m.group(1))}
    assert cited - known == set()


def test_no_reference_to_the_old_spec_notes_is_left():
    left = {str(p.relative_to(REPO_ROOT)): len(OLD_REF.findall(readable_text(p))) for p in repository_files()}
    assert {path: n for path, n in left.items() if n} == {}
