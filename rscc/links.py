"""Where the project lives: the one place to set the repository's address, and the launch links
built from it.

``REPO_URL`` names the repository (the owner ``rscc-companion`` is a placeholder until the project
is published under its own account). The README's Colab and Binder links, the notebooks' badges
and Colab cells, and CITATION.cff hold the address as text, because they must work before rscc is
installed; a fork sets ``REPO_URL`` here and runs ::

    python -m rscc.links --update     # rewrite every launch link to REPO_URL
    python -m rscc.links --check      # list the links that disagree with it (exit status 1)

``tests/test_launch.py`` fails while any link disagrees.

:func:`colab_setup` is what a notebook's first cell calls on Colab, from the fresh clone: it
installs rscc and the packages Colab lacks without replacing Colab's own torch, torchvision, numpy
and pandas, and asks for a runtime restart only when pip replaced a package the kernel had
already imported. This module imports only the standard library, so that cell can use it before
any dependency is installed.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_URL = "https://github.com/rscc-companion/rscc"
BRANCH = "main"

# GitHub repositories other than this one that the README and notebooks may link to.
FOREIGN_REPOSITORIES = ("Chen-Yang-Liu/LEVIR-CC-Dataset",)

# Colab's preinstalled packages that the Colab install must keep (pinned to their installed versions).
COLAB_KEEPS = ("torch", "torchvision", "numpy", "pandas")
COLAB_REQUIREMENTS = "requirements-colab.txt"  # at the repository root
NO_DEPS_REQUIREMENTS = "binder/requirements-no-deps.txt"  # weight-only packages, installed with --no-deps

_PART = r"[^/\s)\]\"'`\\]+"  # one path component of a URL (`<owner>` included); a notebook's JSON escapes quotes
COLAB = re.compile(rf"https://colab\.research\.google\.com/github/({_PART})/({_PART})/blob/({_PART})/")
BINDER = re.compile(rf"https://mybinder\.org/v2/gh/({_PART})/({_PART})/([^/?\s)\]\"'`\\]+)")
GITHUB = re.compile(rf"https://github\.com/({_PART})/([^/\s)\]\"'`#?<>\\]+)")
# Every URL of the three hosts, to check that none escapes the patterns above.
ANY_LAUNCH_URL = re.compile(r"https?://(?:www\.)?(?:github\.com|colab\.research\.google\.com|mybinder\.org)"
                            r"[^\s)\]\"'`<>\\]*(?:<[^>\s]*>[^\s)\]\"'`<>\\]*)*")
# Image URLs of the badges, which name no repository.
BADGE_IMAGES = ("https://colab.research.google.com/assets/colab-badge.svg", "https://mybinder.org/badge_logo.svg")


def owner_and_name(repo_url: str = REPO_URL) -> tuple[str, str]:
    """("owner", "name") of a ``https://github.com/owner/name`` address."""
    match = GITHUB.fullmatch(repo_url.rstrip("/"))
    if match is None:
        raise ValueError(f"rscc/links.py: REPO_URL must look like https://github.com/OWNER/NAME, got {repo_url!r}")
    return match.group(1), match.group(2)


def colab_url(notebook: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """Colab's address of ``notebook`` (a path inside the repository, e.g. notebooks/01_x.ipynb)."""
    owner, name = owner_and_name(repo_url)
    return f"https://colab.research.google.com/github/{owner}/{name}/blob/{branch}/{notebook}"


def binder_url(notebook: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """mybinder.org's address that builds the repository and opens ``notebook`` in JupyterLab."""
    owner, name = owner_and_name(repo_url)
    return f"https://mybinder.org/v2/gh/{owner}/{name}/{branch}?labpath={notebook}"


def badges(notebook: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """The Markdown line of Colab and Binder badges for ``notebook``."""
    return (f"[![Open in Colab]({BADGE_IMAGES[0]})]({colab_url(notebook, repo_url, branch)}) "
            f"[![Launch Binder]({BADGE_IMAGES[1]})]({binder_url(notebook, repo_url, branch)})")


# ----------------------------------------------------------------------------- checking, rewriting
def disagreements(text: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> list[str]:
    """The github.com, Colab and Binder URLs of ``text`` that do not point to ``repo_url`` (at
    ``branch``), other than the badge images and the repositories of FOREIGN_REPOSITORIES."""
    ours = "/".join(owner_and_name(repo_url))
    wrong = []
    for match in ANY_LAUNCH_URL.finditer(text):
        url = match.group(0)
        if url in BADGE_IMAGES:
            continue
        for pattern, has_branch in ((COLAB, True), (BINDER, True), (GITHUB, False)):
            found = pattern.match(url)
            if found:
                repo = f"{found.group(1)}/{found.group(2)}"
                ok = repo == ours and (not has_branch or found.group(3) == branch)
                ok = ok or (pattern is GITHUB and repo in FOREIGN_REPOSITORIES)
                break
        else:
            ok = False  # a URL of these hosts in no known shape
        if not ok:
            wrong.append(url)
    return wrong


def rewrite(text: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """``text`` with every Colab, Binder and (non-foreign) github.com URL pointing to ``repo_url``."""
    owner, name = owner_and_name(repo_url)

    def colab(m: re.Match) -> str:
        return f"https://colab.research.google.com/github/{owner}/{name}/blob/{branch}/"

    def binder(m: re.Match) -> str:
        return f"https://mybinder.org/v2/gh/{owner}/{name}/{branch}"

    def github(m: re.Match) -> str:
        if f"{m.group(1)}/{m.group(2)}" in FOREIGN_REPOSITORIES:
            return m.group(0)
        return f"https://github.com/{owner}/{name}"

    return GITHUB.sub(github, BINDER.sub(binder, COLAB.sub(colab, text)))


def link_files(root: Path) -> list[Path]:
    """The files that hold launch links: README.md, CITATION.cff and the notebooks."""
    return [p for p in [root / "README.md", root / "CITATION.cff", *sorted((root / "notebooks").glob("*.ipynb"))]
            if p.is_file()]


def update(root: Path, repo_url: str = REPO_URL, branch: str = BRANCH) -> list[Path]:
    """Rewrite the launch links of the files under ``root``; returns the files that changed.

    The text is edited in place (a notebook's JSON is not re-serialised), so only URLs change."""
    changed = []
    for path in link_files(root):
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, repo_url, branch)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def check(root: Path, repo_url: str = REPO_URL, branch: str = BRANCH) -> dict[str, list[str]]:
    """{file: URLs that disagree with ``repo_url``} for the files under ``root``."""
    found = {}
    for path in link_files(root):
        wrong = disagreements(path.read_text(encoding="utf-8"), repo_url, branch)
        if wrong:
            found[path.relative_to(root).as_posix()] = wrong
    return found


# ----------------------------------------------------------------------------- Colab
def requirement_lines(path: Path) -> list[str]:
    """The requirement lines of a pip requirements file (comments, blanks and options dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def _loaded_distributions() -> dict[str, str]:
    """{distribution: version} of the installed distributions whose modules this process imported."""
    from importlib import metadata

    by_module = metadata.packages_distributions()
    names = {dist for module in list(sys.modules) if "." not in module for dist in by_module.get(module, ())}
    versions = {}
    for dist in names:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def colab_setup(clone: str | Path, run: Callable[..., object] = subprocess.run,
                loaded: Callable[[], dict[str, str]] = _loaded_distributions) -> list[str]:
    """Install rscc from ``clone`` (a checkout) into the running Colab kernel's environment.

    1. Colab's own torch, torchvision, numpy and pandas are written into a constraints file at
       their installed versions, so pip keeps them (or stops with a conflict), never replaces them.
    2. ``pip install -r requirements-colab.txt -c <that file>``: rscc's other dependencies, at
       pyproject.toml's pins where Colab has no version of its own to keep.
    3. ``pip install --no-deps <clone>`` (not editable: a running kernel imports a regular
       install at once) and the weight-only packages of binder/requirements-no-deps.txt.
    4. The clone goes first on ``sys.path`` and ``PYTHONPATH``, so that rscc's folders (runs/,
       results/, figures/) are the clone's, as in a local checkout.

    Returns the distributions that pip replaced although the kernel had imported them; when there
    are any, it prints that the runtime must be restarted (and nothing otherwise)."""
    import importlib
    import os
    from importlib import metadata

    clone = Path(clone)
    before = loaded()
    pins = []
    for name in COLAB_KEEPS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass  # not preinstalled: requirements-colab.txt does not ask for it either
    constraints = Path(tempfile.gettempdir()) / "rscc-colab-constraints.txt"
    constraints.write_text("".join(line + "\n" for line in pins), encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    run([*pip, "-r", str(clone / COLAB_REQUIREMENTS), "-c", str(constraints)], check=True)
    run([*pip, "--no-deps", str(clone)], check=True)
    run([*pip, "--no-deps", "-r", str(clone / NO_DEPS_REQUIREMENTS)], check=True)
    importlib.invalidate_caches()
    if str(clone) not in sys.path:
        sys.path.insert(0, str(clone))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(clone), os.environ.get("PYTHONPATH")) if p)
    replaced = []
    for dist, version in sorted(before.items()):
        try:
            now = metadata.version(dist)
        except metadata.PackageNotFoundError:
            now = None
        if now != version:
            replaced.append(dist)
    if replaced:
        print(f"pip replaced {', '.join(replaced)}, which this kernel had already imported: restart the "
              "runtime (Runtime > Restart session), then run the notebook again from the top.")
    return replaced


# ----------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rscc.links", description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--update", action="store_true", help="rewrite every launch link to the repository URL")
    action.add_argument("--check", action="store_true", help="list the links that disagree with it (exit 1)")
    parser.add_argument("--repo-url", default=REPO_URL, help=f"the repository (default: REPO_URL, {REPO_URL})")
    parser.add_argument("--branch", default=BRANCH, help=f"the branch the links open (default: {BRANCH})")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout whose files are read (default: this one)")
    args = parser.parse_args(argv)
    owner_and_name(args.repo_url)  # a malformed address fails before any file is touched
    if args.update:
        for path in update(args.root, args.repo_url, args.branch):
            print(f"updated {path.relative_to(args.root)}")
        return 0
    wrong = check(args.root, args.repo_url, args.branch)
    for path, urls in wrong.items():
        for url in urls:
            print(f"{path}: {url} does not point to {args.repo_url} ({args.branch})")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
