"""Shared steps of the study notebooks: the dataset of a profile, trainings that are reused when
complete, and the collection of every run's metrics."""
from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

from rscc.config import RunConfig
from rscc.errors import RsccError
from rscc.experiments.profiles import Profile
from rscc.paths import cache_dir


def synthetic_root(pairs: int, size: int, seed: int = 0) -> Path:
    """Where the synthetic dataset of these parameters lives (shared with the trainer)."""
    return cache_dir() / f"synthetic-{pairs}-{size}-{seed}"


def dataset_root(profile: Profile, progress: bool = True) -> Path:
    """The profile's dataset: LEVIR-CC when given, else the synthetic set (generated if missing)."""
    if profile.data:
        return Path(profile.data)
    from rscc.data.synth import ensure_synthetic

    return ensure_synthetic(synthetic_root(profile.synth_pairs, profile.synth_size), profile.synth_pairs,
                            size=profile.synth_size, seed=0)


# ----------------------------------------------------------------------------- reusable trainings
# Options that may differ between a saved run and a request without making the run stale.
VOLATILE = {"train": {"num_threads", "log_every", "device"}, "data": {"num_workers"}}


def config_digest(config: RunConfig) -> str:
    """sha256 of the options that determine a run's result (volatile ones left out)."""
    sections = config.to_dict()
    sections.pop("preset", None)
    sections.pop("overrides", None)
    sections["model"].pop("vocab_size", None)  # filled in by the trainer from the vocabulary
    for section, names in VOLATILE.items():
        for name in names:
            sections[section].pop(name, None)
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def metrics_path(run_dir: Path) -> Path:
    return Path(run_dir) / "eval" / "metrics.json"


def is_complete(run_dir: str | Path, config: RunConfig) -> bool:
    """True when ``run_dir`` holds a finished training of exactly ``config`` and its evaluation.

    Judged by content, not by a file's existence: the saved config must have the same digest,
    metrics.json must parse, record that digest, and be newer than the weights it evaluated."""
    run_dir = Path(run_dir)
    try:
        saved = RunConfig.load(run_dir / "config.yaml")
        metrics = json.loads(metrics_path(run_dir).read_text())
    except (RsccError, OSError, json.JSONDecodeError):
        return False
    digest = config_digest(config)
    if config_digest(saved) != digest or metrics.get("config_sha256") != digest:
        return False
    weights = [p for p in (run_dir / "best" / "weights.safetensors", run_dir / "last" / "weights.safetensors") if p.exists()]
    if not weights:
        return False
    return metrics_path(run_dir).stat().st_mtime >= max(p.stat().st_mtime for p in weights)


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
    configuration is resumed; a stale one (another configuration) is trained again from scratch."""
    from rscc.config import load_preset
    from rscc.evaluate import evaluate_run
    from rscc.model.run import checkpoint_dir
    from rscc.train import train

    config = load_preset(preset or profile.preset, list(profile.overrides) + list(overrides))
    run_dir = profile.run_dir(name)
    if is_complete(run_dir, config):
        return json.loads(metrics_path(run_dir).read_text())
    resume = False
    if (run_dir / "config.yaml").exists():
        try:
            same = config_digest(RunConfig.load(run_dir / "config.yaml")) == config_digest(config)
        except RsccError:
            same = False
        if same and checkpoint_dir(run_dir, "last") is not None:
            resume = True
        else:
            shutil.rmtree(run_dir)
    with torch_threads(profile.threads):
        summary = train(config, run_dir, resume=resume, progress=progress)
        metrics = evaluate_run(run_dir, split=profile.eval_split, out_dir=run_dir / "eval", beam=beam,
                               meteor=meteor, progress=progress, device=profile.device)
    metrics["config_sha256"] = config_digest(config)
    metrics["training"] = {k: v for k, v in summary.items() if isinstance(v, (int, float, str)) or v is None}
    metrics_path(run_dir).write_text(json.dumps(metrics, indent=1))
    return metrics
