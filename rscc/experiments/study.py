"""Shared steps of the study notebooks: the dataset of a profile, trainings that are reused when
complete, and the collection of every run's metrics."""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

from rscc.config import RESULT_NEUTRAL, RunConfig
from rscc.errors import RsccError
from rscc.experiments.plans import (  # noqa: F401 - the plans, imported from here by notebooks and tests
    DIAGNOSIS_SETTINGS,
    RANDOM_WEIGHTS,
    ablation_plan,
    backbone_plan,
    diagnosis_plan,
    lambda_plan,
    main_run_overrides,
    recurrence_levels,
    recurrence_overrides,
    recurrence_plan,
    recurrence_thetas,
    scaling_plan,
    study_plan,
)
from rscc.experiments.profiles import Profile


def dataset_root(profile: Profile, progress: bool = True, stock_share: float | None = None) -> Path:
    """The profile's dataset: LEVIR-CC when given, else the synthetic set (generated if missing)
    with ``stock_share`` (the generator's caption recurrence; None: its default, STOCK_SHARE)."""
    if profile.data:
        return Path(profile.data)
    from rscc.data.synth import STOCK_SHARE, default_root, ensure_synthetic

    share = STOCK_SHARE if stock_share is None else stock_share
    root = default_root(profile.synth_pairs, profile.synth_size, stock_share=share)
    return ensure_synthetic(root, profile.synth_pairs,
                            size=profile.synth_size, seed=0, progress=progress, stock_share=share)


# ----------------------------------------------------------------------------- reusable trainings
# config.RESULT_NEUTRAL may differ between a saved run and a request without making the run stale:
# left out of the digest, except these, which joined the set after runs were saved and are set to
# their default instead, so that the digests of those runs keep their value.
DIGEST_AT_DEFAULT = {"train.checkpoint_every"}
# Options added after runs were saved: left out of the digest at their default value, so that the
# runs saved before them (and every run that keeps the default) keep their digest.
ADDED_LATER = {"data": {"synth_stock_share"}}


def config_digest(config: RunConfig) -> str:
    """sha256 of the options that determine a run's result (``config.RESULT_NEUTRAL`` ones left out)."""
    sections = config.to_dict()
    sections.pop("preset", None)
    sections.pop("overrides", None)
    sections["model"].pop("vocab_size", None)  # filled in by the trainer from the vocabulary
    defaults = RunConfig().to_dict()
    for key in RESULT_NEUTRAL:
        section, name = key.split(".")
        if key in DIGEST_AT_DEFAULT:
            sections[section][name] = defaults[section][name]
        else:
            sections[section].pop(name, None)
    for section, names in ADDED_LATER.items():
        for name in names:
            if sections[section].get(name) == defaults[section][name]:
                sections[section].pop(name)
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / "eval" / "metrics.json"


def is_complete(run_dir: str | Path, config: RunConfig) -> bool:
    """True when ``run_dir`` holds a finished training of exactly ``config`` and its evaluation.

    Judged by content, not by a file's existence: the saved config must have the same digest,
    metrics.json must parse, record that digest, and be newer than the weights it evaluated; the
    per-pair scores the study's intervals read (``eval/per_pair.jsonl``) must be there too (an
    evaluation from before they were written is done again)."""
    run_dir = Path(run_dir)
    try:
        saved = RunConfig.load(run_dir / "config.yaml")
        metrics = json.loads(metrics_path(run_dir).read_text())
    except (RsccError, OSError, json.JSONDecodeError):
        return False
    digest = config_digest(config)
    if not isinstance(metrics, dict) or config_digest(saved) != digest or metrics.get("config_sha256") != digest:
        return False
    weights = [p for p in (run_dir / "best" / "weights.safetensors", run_dir / "last" / "weights.safetensors")
               if p.exists()]
    if not weights or not (run_dir / "eval" / "per_pair.jsonl").is_file():
        return False
    if metrics_path(run_dir).stat().st_mtime < max(p.stat().st_mtime for p in weights):
        return False
    # the configuration names its data (synthetic: by size and seed) but not its content: a run
    # trained before the dataset was generated anew is stale (runs that predate data_sha256 pass)
    return "data_sha256" not in metrics or metrics["data_sha256"] == data_digest(config)


def data_digest(config: RunConfig) -> str:
    """sha256 of the captions file of the dataset ``config`` trains on (generated if missing)."""
    from rscc.data.levircc import CAPTIONS_FILE
    from rscc.evaluate import data_root

    return hashlib.sha256((data_root(config, progress=False) / CAPTIONS_FILE).read_bytes()).hexdigest()


def _saved_digest(run_dir: Path) -> str | None:
    try:
        return config_digest(RunConfig.load(run_dir / "config.yaml"))
    except (OSError, RsccError):
        return None


def run_dir_for(profile: Profile, name: str, config: RunConfig) -> Path:
    """Where the run ``name`` of ``config`` lives: ``runs/<profile>/<name>`` when that folder is
    free or holds this configuration; otherwise beside it, in ``<name>@<first 8 hex digits of the
    configuration's digest>``, so a rerun with other settings never trains over a finished run."""
    base = profile.run_dir(name)
    if not base.exists() or _saved_digest(base) == config_digest(config):
        return base
    return base.with_name(f"{base.name}@{config_digest(config)[:8]}")


@contextmanager
def torch_threads(n: int | None):
    """Run a block with ``n`` torch threads (None: leave as is). One thread is much faster than
    two on a shared 2-core machine for the small models of the quick profile."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_and_evaluate(profile: Profile, name: str, overrides: list[str] = (), preset: str | None = None,
                       meteor: bool = True, beam: int = 1, progress: bool = True) -> dict:
    """Train ``preset`` (default: the profile's) with the profile's and these overrides into
    ``runs/<profile>/<name>``, evaluate it on the profile's split, and return the metrics.

    A complete run of the same configuration is reused as it is; a run interrupted with the same
    configuration is resumed; a folder holding another configuration's run is left as it is and
    this configuration trains beside it (:func:`run_dir_for`). The returned metrics name the run
    folder (``run_dir``)."""
    from rscc.evaluate import evaluate_run
    from rscc.runs import checkpoint_dir
    from rscc.training.loop import train

    config = run_config(profile, overrides, preset)
    run_dir = run_dir_for(profile, name, config)
    if is_complete(run_dir, config):
        return {**json.loads(metrics_path(run_dir).read_text()), "run_dir": str(run_dir)}
    resume = (run_dir / "config.yaml").exists() and checkpoint_dir(run_dir, "last") is not None
    with torch_threads(profile.threads):
        summary = train(config, run_dir, resume=resume, progress=progress)
        metrics = evaluate_run(run_dir, split=profile.eval_split, out_dir=run_dir / "eval", beam=beam,
                               meteor=meteor, progress=progress, device=profile.device)
    metrics["config_sha256"] = config_digest(config)
    metrics["data_sha256"] = data_digest(config)
    metrics["training"] = {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) or v is None}
    metrics_path(run_dir).write_text(json.dumps(metrics, indent=1))
    return {**metrics, "run_dir": str(run_dir)}


def run_config(profile: Profile, overrides: list[str] = (), preset: str | None = None) -> RunConfig:
    """The configuration :func:`train_and_evaluate` trains for these arguments: ``preset`` (default:
    the profile's) with the profile's ``overrides``, its ``preset_overrides`` of that preset, then
    ``overrides``."""
    from rscc.config import load_preset

    name = preset or profile.preset
    return load_preset(name, list(profile.overrides) + list(profile.preset_overrides.get(name, [])) + list(overrides))


def find_complete_run(profile: Profile, config: RunConfig) -> str | None:
    """The name of a complete run of exactly ``config`` under ``runs/<profile>/``, if any."""
    base = profile.run_dir()
    for path in sorted(base.glob("**/eval/metrics.json")):
        run_dir = path.parent.parent
        if is_complete(run_dir, config):
            return run_dir.relative_to(base).as_posix()
    return None


def train_or_reuse(profile: Profile, name: str, overrides: list[str] = (), preset: str | None = None,
                   **kwargs) -> tuple[str, dict]:
    """(run name, metrics): an existing complete run of the same configuration anywhere under
    ``runs/<profile>/`` (e.g. notebook 04's run of the preset's own setting), else a new training
    named ``name`` (:func:`train_and_evaluate`, same keyword arguments)."""
    found = find_complete_run(profile, run_config(profile, overrides, preset))
    if found is not None:
        return found, json.loads(metrics_path(profile.run_dir(found)).read_text())
    metrics = train_and_evaluate(profile, name, overrides, preset=preset, **kwargs)
    return Path(metrics["run_dir"]).relative_to(profile.run_dir()).as_posix(), metrics  # name@digest if beside


def _train_entry(profile: Profile, entry: dict, kwargs: dict) -> tuple[str, dict]:
    """One training of a plan, in a worker process (module level, so that spawn can import it):
    ``entry["evaluate"]`` (if any) over ``kwargs``; then, when the entry names ``score_on`` (a
    dataset root), the run is also scored on that dataset's test split (:func:`evaluate_on`)."""
    kwargs = {**kwargs, **entry.get("evaluate", {})}
    name, metrics = train_or_reuse(profile, entry["name"], entry["overrides"], preset=entry.get("preset"), **kwargs)
    if entry.get("score_on"):
        evaluate_on(profile, name, entry["score_on"], meteor=kwargs.get("meteor", False))
    return name, metrics


def run_plan(profile: Profile, plan: list[dict], workers: int = 2, progress: bool = True,
             **kwargs) -> tuple[dict[str, dict], list[dict]]:
    """Train (or reuse, :func:`train_or_reuse`) every entry of ``plan``, ``workers`` trainings at a
    time, each in its own spawned process with the profile's torch threads (two single-thread
    trainings use both cores of a 2-core machine). Returns ({run name: metrics}, the plan with each
    ``name`` replaced by the run actually used). ``kwargs`` go to :func:`train_and_evaluate`
    (``meteor``, ``beam``); the workers' own progress bars are off. Before parallel workers start,
    this process generates every synthetic dataset they miss, with ``workers`` processes: two
    trainings started together would otherwise generate the same set twice."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    from rscc.evaluate import data_root

    kwargs = {**kwargs, "progress": False}
    located = locate_runs(profile, plan)  # each complete run found (and checked) once
    done = {e["name"]: json.loads(metrics_path(profile.run_dir(e["name"])).read_text())
            for e in located if e["complete"]}
    missing = [i for i, e in enumerate(located) if not e["complete"]]
    parallel = workers > 1 and len(missing) > 1
    if parallel:
        for i in missing:
            data_root(run_config(profile, located[i]["overrides"], located[i].get("preset")),
                      progress=progress, workers=workers)
    bar = tqdm(total=len(plan), initial=len(plan) - len(missing), desc="trainings", disable=not progress)
    if not parallel:
        for i in missing:
            name, metrics = _train_entry(profile, located[i], kwargs)
            located[i], done[name] = {**located[i], "name": name, "complete": True}, metrics
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(missing)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_train_entry, profile, located[i], kwargs): i for i in missing}
            for future in as_completed(futures):
                i = futures[future]
                name, metrics = future.result()
                located[i], done[name] = {**located[i], "name": name, "complete": True}, metrics
                bar.update()
    bar.close()
    return done, located


def training_cost(config: RunConfig) -> float:
    """A rough cost of a training, to start the longest first: training pairs x epochs (synthetic
    sets; a LEVIR-CC training counts its epochs)."""
    pairs = config.data.synth_pairs if config.data.root is None else 1
    return float(pairs * config.train.epochs)


def train_study(profile: Profile, workers: int | None = None, synthetic_only: bool = True,
                progress: bool = True) -> dict[str, dict]:
    """Train (or reuse) every training of the study notebooks at once (:func:`study_plan`), before
    they run: each configuration once, ``workers`` (default: the profile's) at a time, the longest
    first, so both cores stay busy while the main run trains and the notebooks then find every run
    complete. Every synthetic dataset is generated first (:func:`run_plan`). Notebook 08's runs are
    also scored on the test split of its largest set, as the notebook scores them. Returns {run name: metrics}."""
    from rscc.evaluate import data_root

    workers = workers or profile.workers
    planned = {}  # config digest -> (the first entry that asks for it, its configuration)
    for entry in study_plan(profile, synthetic_only=synthetic_only):
        config = run_config(profile, entry["overrides"], entry.get("preset"))
        planned.setdefault(config_digest(config), (entry, config))
    # notebook 08's sizes, under whichever name trains them (its 1,000-pair runs are notebook 04's)
    scaling = [run_config(profile, e["overrides"]) for e in scaling_plan(profile)] if synthetic_only else []
    scored = {config_digest(c) for c in scaling}
    test_root = (str(data_root(max(scaling, key=lambda c: c.data.synth_pairs), progress=progress, workers=workers))
                 if scaling else None)
    # longest first (a stable sort keeps the plans' order among equals)
    ordered = sorted(planned.items(), key=lambda item: -training_cost(item[1][1]))
    entries = [{**entry, "score_on": test_root} if digest in scored else entry for digest, (entry, _) in ordered]
    done, _ = run_plan(profile, entries, workers=workers, progress=progress)
    return done


def locate_runs(profile: Profile, plan: list[dict]) -> list[dict]:
    """``plan`` (:func:`ablation_plan` or :func:`backbone_plan` entries) with each ``name`` replaced
    by the complete run of the same configuration that :func:`train_or_reuse` would use, if any,
    and ``complete`` saying whether there is one."""
    located = []
    for entry in plan:
        found = find_complete_run(profile, run_config(profile, entry["overrides"], entry.get("preset")))
        located.append({**entry, "name": found or entry["name"], "complete": found is not None})
    return located


# ----------------------------------------------------------------------------- notebook 08: data scaling
def evaluate_on(profile: Profile, run_name: str, root: str | Path, meteor: bool = False,
                progress: bool = False) -> tuple[Path, dict]:
    """(folder, metrics): run ``run_name`` evaluated on the test split of the dataset at ``root``
    (notebook 08 scores every training size on one test split). The folder holds
    ``eval/metrics.json`` and ``eval/per_pair.jsonl`` (what :func:`rscc.experiments.compare.effects`
    reads): the run itself when its own evaluation was of that split, else
    ``<run>/test-of/<dataset folder name>``, written once and redone when the weights are newer or
    the dataset was generated anew (its captions file's sha256, ``data_sha256``, differs)."""
    from rscc.data.levircc import CAPTIONS_FILE
    from rscc.evaluate import evaluate_run
    from rscc.runs import find_weights

    run_dir, root = profile.run_dir(run_name), Path(root).absolute()
    own = json.loads(metrics_path(run_dir).read_text())
    if own.get("split") == "test" and Path(own.get("data", "")).absolute() == root:
        return run_dir, own
    folder = run_dir / "test-of" / root.name
    path, weights = metrics_path(folder), find_weights(run_dir, "best")
    digest = hashlib.sha256((root / CAPTIONS_FILE).read_bytes()).hexdigest()
    if (path.is_file() and (folder / "eval" / "per_pair.jsonl").is_file()
            and path.stat().st_mtime >= weights.stat().st_mtime):
        metrics = json.loads(path.read_text())
        if metrics.get("data_sha256", digest) == digest:  # evaluations that predate data_sha256 pass
            return folder, metrics
    with torch_threads(profile.threads):
        metrics = evaluate_run(run_dir, data=root, split="test", out_dir=folder / "eval", meteor=meteor,
                               progress=progress, device=profile.device)
    metrics["data_sha256"] = digest
    path.write_text(json.dumps({k: v for k, v in metrics.items() if k != "out_dir"}, indent=1))
    return folder, metrics
