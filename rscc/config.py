"""One configuration object per run.

A run is described by a :class:`RunConfig` made of four sections (``model``, ``data``, ``loss``,
``train``). It starts from a preset (a YAML file in ``rscc/presets/``), takes ``key=value``
overrides, and is saved as ``config.yaml`` beside the run's outputs, from which the same model is
rebuilt. The same object drives the CLI, the notebooks (papermill parameters) and the tests.

Faithful quirks of the authors' code are fields of :class:`ModelConfig` and :class:`LossConfig`,
documented where they are declared.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from rscc.errors import ConfigError
from rscc.paths import read_document

# The options that take one of a few words: declared once, as the fields' types (CHOICES below
# is read off them for the modules that list the words)
VocabRule = Literal["authors", "train"]  # authors (all splits, count > 5) | train (train only, count >= 5)
FnMode = Literal["none", "fne", "fna"]
SimilaritySource = Literal["sentence", "string"]  # sentence (encoder embeddings) | string (exact equality)
Schedule = Literal["constant", "cosine"]  # constant (authors) | cosine
SelectBest = Literal["val_loss", "cider", "retrieval"]  # val_loss (authors) | cider | retrieval
Device = Literal["auto", "cuda", "mps", "cpu"]

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass
class ModelConfig:
    """The RSICRC architecture (METHOD §2). Defaults are the released configuration (RN50, d=2048)."""

    backbone: str = "RN50"  # a registered backbone: rscc.model.registry.registered_names()
    # Where backbone weights come from: a local file, "remoteclip" (hub, when online),
    # "imagenet" (torchvision when cached; packaged backbones), "aerial" (geoembed) or null for random
    # init (with a warning); the names each backbone offers are in rscc.model.backbones.
    pretrained: str | None = None
    image_size: int | None = None  # input side in pixels; None = the backbone's own
    d_model: int = 2048
    max_len: int = 41
    encoder_layers: int = 3
    decoder_layers: int = 1  # unimodal layers, and separately as many multimodal layers
    num_heads: int = 8
    h_dim: int = 512  # HSA feed-forward width
    a_dim: int = 2048  # HSA attention width
    dropout: float = 0.1
    learnable_positions: bool = False  # False: sinusoidal decoder positions
    fine_tune: bool = True  # train the authors' subset of backbone children (METHOD §2.1)
    freeze_backbone: bool = False  # freeze the whole backbone (enables the feature cache)
    tie_embeddings: bool = True
    prenorm: bool = False
    vocab_size: int = 0  # set from the run's vocabulary
    # --- faithful quirks of the authors' code (a converted checkpoint needs all three on) ---
    value_from_key: bool = True  # HSA values are computed with the KEY projection; to_v unused
    transpose_hsa_output: bool = True  # HSA returns spatially transposed maps (B, d, col, row)
    double_residual: bool = True  # HSA adds a second residual around the width-d block
    # --- the small CPU backbone (backbone: tiny), an open_clip ViT built from these numbers ---
    tiny_width: int = 256
    tiny_layers: int = 4
    tiny_patch: int = 16


@dataclass
class DataConfig:
    """Where the dataset is and how it is read (METHOD §1)."""

    root: str | None = None  # LEVIR-CC root (LevirCCcaptions.json + images/); None = synthetic
    vocab_rule: VocabRule = "authors"  # authors (all splits, count > 5) | train (train only, count >= 5)
    max_len: int = 41
    num_workers: int = 0
    strict_length: bool = False  # reject captions longer than max_len - 2 instead of truncating
    # synthetic dataset made when root is None
    synth_pairs: int = 600
    synth_size: int = 256
    synth_seed: int = 0
    # share of changed pairs' captions that are stock sentences (rscc.data.synth.STOCK_SHARE, the
    # default, matches LEVIR-CC train's caption recurrence; 1.0 = STOCK_SHARE_HIGH; 0 = only chance
    # repeats): how many false negatives a batch holds. Images do not depend on it.
    synth_stock_share: float = 0.25


@dataclass
class LossConfig:
    """Joint loss L_cap + lambda * L_con (METHOD §3)."""

    lam: float = 0.5
    temperature: float = 0.01
    learnable_temperature: bool = False
    # none: no false-negative handling; fne: eliminate (authors' default, always on there);
    # fna: eliminate and attract (authors' flag `fna`)
    fn_mode: FnMode = "fna"
    theta: float = 1.0
    # theta_tolerance: caption pairs with similarity >= theta - tolerance are false negatives.
    # 0.0 is faithful (at theta 1.0 float32 misses about a third of identical captions).
    theta_tolerance: float = 1e-4
    similarity_source: SimilaritySource = "sentence"  # sentence (encoder embeddings) | string (exact equality)
    sentence_model: str = "all-MiniLM-L6-v2"  # authors: sentence-transformers/msmarco-distilbert-cos-v5
    symmetric: bool = False  # add the text -> image direction


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping (METHOD §4)."""

    epochs: int = 50
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup: float = 0.025  # fraction of all steps
    schedule: Schedule = "constant"  # constant (authors) | cosine
    grad_clip: float | None = None
    seed: int = 42
    device: Device = "auto"  # auto | cpu | cuda | mps
    bf16: bool = True  # autocast to bfloat16 on CUDA
    select_best: SelectBest = "val_loss"  # val_loss (authors) | cider | retrieval
    cache_features: bool = True  # cache backbone features when the backbone is frozen
    log_every: int = 10
    max_steps: int | None = None  # stop after this many optimiser steps (tests, smoke runs)
    checkpoint_every: int | None = None  # write last/ every this many steps; None: at the end of each epoch
    # torch CPU threads (torch.set_num_threads); None keeps torch's default. On a CPU shared with
    # other processes, 1 is much faster than an oversubscribed default (benchmarks/RESULTS.md, lab notes).
    num_threads: int | None = None


SECTIONS = {"model": ModelConfig, "data": DataConfig, "loss": LossConfig, "train": TrainConfig}

# The options typed as a Literal take one of its words (CHOICES lists them for the modules that
# need the words); model.backbone is checked against the backbone registry (rscc.model.backbones).


@functools.cache
def _hints(section: str) -> dict[str, Any]:
    return get_type_hints(SECTIONS[section])


def _choices() -> dict[str, tuple[str, ...]]:
    return {f"{section}.{name}": get_args(hint) for section in SECTIONS
            for name, hint in _hints(section).items() if get_origin(hint) is Literal}


CHOICES = _choices()  # {"loss.fn_mode": ("none", "fne", "fna"), ...}

# Options that do not change what a run computes (logging, checkpoint frequency, threads, device,
# loader processes): a resumed run may change them (rscc.training.preflight), and a saved run is
# reused whatever their values (rscc.experiments.study.config_digest).
RESULT_NEUTRAL = frozenset({"train.log_every", "train.checkpoint_every", "train.num_threads", "train.device",
                            "data.num_workers"})
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None)}


def checked_value(section: str, name: str, value: Any, source: str = "config") -> Any:
    """``value`` for option ``section.name`` when it has the declared type (an int is accepted
    for a float, and a string such as ``1e-4`` that YAML leaves unparsed becomes a float) and,
    for the options of :data:`CHOICES`, is one of the valid words; ConfigError otherwise."""
    hint = _hints(section)[name]
    if get_origin(hint) is Literal:
        if value not in get_args(hint):
            raise ConfigError(f"{source}: {section}.{name} '{value}' is not one of {', '.join(get_args(hint))}")
        return value
    annotation = {f.name: f.type for f in dataclasses.fields(SECTIONS[section])}[name]
    names = [t.strip() for t in str(annotation).split("|")]
    kinds = tuple(_TYPES[t] for t in names if t in _TYPES)
    if float in kinds and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    fits = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if kinds and not fits:
        raise ConfigError(f"{source}: {section}.{name} must be {' or '.join(names)}, got {value!r}")
    if (section, name) == ("data", "synth_stock_share") and not 0.0 <= value <= 1.0:
        raise ConfigError(f"{source}: data.synth_stock_share must lie in [0, 1], got {value!r}")
    if (section, name) == ("model", "backbone"):
        from rscc.model.backbones import registered_names  # every registered backbone (imports torch)

        if value not in registered_names():
            raise ConfigError(f"{source}: model.backbone '{value}' is not one of {', '.join(registered_names())}")
    return value


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str | None = None
    overrides: list[str] = field(default_factory=list)

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> RunConfig:
        unknown = set(data) - set(SECTIONS) - {"preset", "overrides"}
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}; valid: {sorted(SECTIONS)}")
        sections = {}
        for name, klass in SECTIONS.items():
            values = data.get(name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section '{name}' must be a mapping, got {type(values).__name__}")
            valid = {f.name for f in dataclasses.fields(klass)}
            bad = set(values) - valid
            if bad:
                raise ConfigError(f"{source}: unknown option(s) {sorted(bad)} in '{name}'; valid: {sorted(valid)}")
            sections[name] = klass(**{k: checked_value(name, k, v, source) for k, v in values.items()})
        return cls(**sections, preset=data.get("preset"), overrides=list(data.get("overrides") or []))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        data = read_document(path, ConfigError, fmt="yaml", missing="configuration file not found")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
        return cls.from_dict(data, source=str(path))

    # ----------------------------------------------------------------- overrides
    def override(self, assignments: list[str] | dict[str, Any]) -> RunConfig:
        """Apply ``section.key=value`` (or bare ``key=value`` when the key is unambiguous).

        Values are parsed as YAML scalars (``3``, ``0.5``, ``true``, ``null``). Returns self."""
        items = assignments.items() if isinstance(assignments, dict) else [_split(a) for a in assignments]
        for key, value in items:
            section, name = self._resolve(key)
            target = getattr(self, section)
            parsed = _parse_value(value) if isinstance(value, str) else value
            setattr(target, name, checked_value(section, name, parsed, source=f"override '{key}={value}'"))
            text = value if isinstance(value, str) else json.dumps(value)
            self.overrides.append(f"{section}.{name}={text}")
        return self

    def _resolve(self, key: str) -> tuple[str, str]:
        if "." in key:
            section, name = key.split(".", 1)
            if section not in SECTIONS:
                raise ConfigError(f"unknown section '{section}' in '{key}'; valid: {sorted(SECTIONS)}")
            valid = {f.name for f in dataclasses.fields(SECTIONS[section])}
            if name not in valid:
                raise ConfigError(f"unknown option '{key}'; valid in '{section}': {sorted(valid)}")
            return section, name
        owners = [s for s, k in SECTIONS.items() if key in {f.name for f in dataclasses.fields(k)}]
        if not owners:
            raise ConfigError(f"unknown option '{key}'; valid: {sorted(all_option_names())}")
        if len(owners) > 1:
            raise ConfigError(f"option '{key}' is ambiguous; write one of {[f'{s}.{key}' for s in owners]}")
        return owners[0], key


def _split(assignment: str) -> tuple[str, str]:
    if "=" not in assignment:
        raise ConfigError(f"override '{assignment}' is not of the form key=value")
    key, value = assignment.split("=", 1)
    return key.strip(), value.strip()


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def all_option_names() -> set[str]:
    return {f"{s}.{f.name}" for s, k in SECTIONS.items() for f in dataclasses.fields(k)}


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str, overrides: list[str] | dict[str, Any] | None = None) -> RunConfig:
    """Build the configuration of preset ``name`` (a file in rscc/presets/) plus overrides."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"preset '{name}' does not exist; available: {', '.join(available_presets())}")
    config = RunConfig.load(path)
    config.preset = name
    if overrides:
        config.override(overrides)
    return config
