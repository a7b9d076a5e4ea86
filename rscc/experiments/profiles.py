"""Study profiles: how big each part of the study is.

``smoke``  — the smallest run of every notebook, used by ``make test`` (nbval).
``quick``  — the default of ``make reproduce``: synthetic data generated on the fly, a frozen
             ImageNet EfficientNet-Lite0 (features cached), sized for about 30 minutes on a 2-core CPU.
``paper``  — LEVIR-CC at a given path, RemoteCLIP weights, the authors' hyper-parameters, a GPU.

A notebook's papermill parameters name the profile; everything else comes from here, so the
CLI, the notebooks and the tests share one definition."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from rscc.errors import ConfigError
from rscc.paths import REPO_ROOT

LEVIR_CC_URL = "https://github.com/Chen-Yang-Liu/LEVIR-CC-Dataset"


@dataclass
class Profile:
    name: str
    preset: str
    data: str | None  # LEVIR-CC root; None = synthetic
    synth_pairs: int
    synth_size: int
    overrides: list[str]  # applied to the preset for every training of the study
    thetas: list[float]
    fn_modes: list[str]
    seeds: list[int]
    backbones: list[str]  # presets compared in notebook 05
    backbone_overrides: list[str] = field(default_factory=list)
    device: str = "auto"
    eval_split: str = "test"
    runs_dir: Path = REPO_ROOT / "runs"
    similarity_pairs: int | None = None  # changed pairs sampled for caption-similarity plots (None = all)
    main_overrides: list[str] = field(default_factory=list)  # the main training of notebook 03
    sweep_overrides: list[str] = field(default_factory=list)  # the ablation and backbone trainings (notebooks 04, 05)
    threads: int | None = None  # torch threads for trainings (1 is fastest for small models on 2 shared cores)
    workers: int = 1  # trainings of a sweep run at once, each in its own process (rscc.experiments.study.run_plan)
    # the false-negative ablation (notebook 04): after sweep_overrides (e.g. the contrastive-loss
    # setting its diagnosis chose); diagnosis: whether notebook 04 trains that diagnosis
    ablation_overrides: list[str] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)  # settings of study.DIAGNOSIS_SETTINGS ([] = shown, not trained)
    output_dir: Path | None = None  # figures/ and results/ of a rerun with other parameters (see customise)
    scaling_sizes: list[int] = field(default_factory=list)  # synthetic pairs per training, notebook 08 (data scaling)
    # the joint-training study (notebook 03): loss weights λ, each trained like the ablation with every
    # seed (rscc.experiments.study.lambda_plan); 0 = captioning only
    lambdas: list[float] = field(default_factory=lambda: [0.0, 0.5, 2.0])
    # notebook 09 (false negatives vs caption recurrence): the synthetic generator's stock-sentence share
    # (data.synth_stock_share) at these levels, each trained with fn_modes x thetas x seeds like the
    # ablation (sweep_overrides, ablation_overrides), then recurrence_overrides (its own size), at
    # recurrence_thetas (empty: thetas)
    stock_shares: list[float] = field(default_factory=lambda: [0.0, 0.25, 1.0])
    recurrence_overrides: list[str] = field(default_factory=list)
    recurrence_thetas: list[float] = field(default_factory=list)
    # overrides for the trainings of one preset, after ``overrides`` (e.g. a backbone kept at its own
    # image size when the profile sets another for the rest)
    preset_overrides: dict[str, list[str]] = field(default_factory=dict)

    def run_dir(self, *parts: str) -> Path:
        return self.runs_dir / self.name / Path(*parts)

    def _output_dir(self, kind: str) -> Path:
        """quick: <kind>/; paper: <kind>/paper/; any other (smoke, tests): runs/<profile>/<kind>/;
        a customised rerun (:func:`customise`): <output_dir>/<kind>/."""
        if self.output_dir is not None:
            path = Path(self.output_dir) / kind
        else:
            path = {"quick": REPO_ROOT / kind, "paper": REPO_ROOT / kind / "paper"}.get(
                self.name, self.runs_dir / self.name / kind)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def figures_dir(self) -> Path:
        return self._output_dir("figures")

    @property
    def results_dir(self) -> Path:
        return self._output_dir("results")

    def figure(self, name: str) -> Path:
        return self.figures_dir / f"{name}.png"


# tiny model settings for the smoke profile and the tests that train (seconds per training)
SMOKE_MODEL = [
    "model.tiny_width=64", "model.tiny_layers=1", "model.image_size=64", "model.d_model=32",
    "model.h_dim=32", "model.a_dim=32", "model.num_heads=2",
]

# A paper preset made CPU-sized for the backbone comparison (notebook 05): the backbone is frozen
# with random weights (nothing is downloaded) so its features are computed once and cached, and the
# head, loss and optimiser are cpu-tiny's, so that only the backbone differs from the cpu-tiny run.
_CPU_BACKBONE = [
    "model.pretrained=null", "model.freeze_backbone=true", "model.fine_tune=false",
    "model.d_model=128", "model.encoder_layers=1", "model.num_heads=4", "model.h_dim=256", "model.a_dim=128",
    "loss.sentence_model=all-MiniLM-L6-v2", "loss.theta_tolerance=1e-4", "train.lr=5e-4", "data.num_workers=0",
]

PROFILES = {
    # make test: every notebook in well under a minute (1 epoch of 60 pairs at 64 px, a 32-wide head)
    "smoke": dict(
        preset="cpu-tiny", synth_pairs=60, synth_size=64,
        overrides=SMOKE_MODEL + ["train.epochs=1", "train.batch_size=8", "data.synth_pairs=60", "data.synth_size=64"],
        threads=1,
        thetas=[0.8], fn_modes=["none", "fne", "fna"], seeds=[42, 43], workers=2,
        lambdas=[0.0, 0.5],
        stock_shares=[0.25, 1.0],  # notebook 09: the default level is notebook 04's runs, reused
        diagnosis=["authors", "symmetric+learnable-temperature"],
        backbones=["cpu-tiny", "paper-rn50", "mobilenet-v2-imagenet:random", "mobilenet-v2-imagenet"],
        backbone_overrides=_CPU_BACKBONE + SMOKE_MODEL, similarity_pairs=100,
        scaling_sizes=[40, 80],
    ),
    # make reproduce: EfficientNet-Lite0 with its ImageNet weights, frozen, its features cached, fed the
    # synthetic images at their own 128 px (4 x 4 feature maps), under the narrow head. It replaced
    # cpu-tiny, the random-init tower of the first releases, on one-seed measurements; notebook 05
    # compares the two over seeds. 3,000 pairs x 5 epochs for the main run (notebook 03: rscc's
    # symmetric InfoNCE with a learnable temperature; 5 epochs, not 8, to bring make reproduce to about
    # 30 minutes), 1,000-pair sets for the sweeps of notebooks 03 (λ), 04, 05 (sweep_overrides),
    # 250 to 2,000 pairs for notebook 08, 500 for notebook 09. make reproduce trains every notebook's
    # runs first, two single-thread trainings at a time, longest first
    # (rscc.experiments.study.train_study). The measurements behind these choices are in
    # benchmarks/RESULTS.md, "Study profiles: lab notes".
    "quick": dict(
        preset="efficientnet-lite0-imagenet", synth_pairs=3000, synth_size=128,
        overrides=["model.image_size=128", "train.epochs=5", "train.batch_size=32", "data.synth_pairs=3000",
                   "data.synth_size=128"],
        main_overrides=["train.epochs=5", "train.batch_size=16", "loss.symmetric=true",
                        "loss.learnable_temperature=true"],
        threads=1,
        sweep_overrides=["data.synth_pairs=1000", "train.epochs=2", "train.batch_size=16", "train.lr=1e-3"],
        # notebook 04: θ 0.6, where false negatives are frequent at batch 16; three seeds, two
        # trainings at a time on the two cores
        thetas=[0.6], fn_modes=["none", "fne", "fna"], seeds=[42, 43, 44], workers=2,
        # the ablation's loss: rscc's symmetric InfoNCE with a learnable temperature (the main run's),
        # labelled in notebook 04, whose diagnosis trains the authors' loss beside it (the second
        # setting is the ablation's none runs, reused)
        ablation_overrides=["loss.symmetric=true", "loss.learnable_temperature=true"],
        diagnosis=["authors", "symmetric+learnable-temperature"],
        # notebook 03's λ study: captioning only, the preset's λ (notebook 04's fna runs, reused) and a
        # heavier contrastive weight
        lambdas=[0.0, 0.5, 2.0],
        # notebook 09: stock share 0 (only chance repeats), 0.25 (the LEVIR-like default) and 1.0 (most
        # changed pairs share a handful of sentences), none/fne/fna x 3 seeds on 500 pairs at θ 0.8,
        # where the knob moves the false negatives per batch most (θ 0.6: paraphrases dominate)
        stock_shares=[0.0, 0.25, 1.0], recurrence_overrides=["data.synth_pairs=500"], recurrence_thetas=[0.8],
        # notebook 05: the same head on frozen, cached features of random, ImageNet and aerial weights
        # (MobileNetV2 random vs ImageNet isolates the weights; cpu-tiny is the first releases' main
        # backbone; EfficientNet-Lite0's runs are notebook 04's none runs)
        backbones=["cpu-tiny", "mobilenet-v2-imagenet:random", "mobilenet-v2-imagenet", "efficientnet-lite0-imagenet",
                   "geoembed-aerial"],
        backbone_overrides=_CPU_BACKBONE + ["model.image_size=128"],
        # geoembed keeps its preset's 64 px (8 x 8 maps; at 128 px its 16 x 16 maps cost the head
        # several times more)
        preset_overrides={"geoembed-aerial": ["model.image_size=64"]},
        # notebook 08: the sweeps' training (2 epochs, none mode) on 250 to 2,000 synthetic pairs, all
        # scored on the 2,000-pair set's test split; its 1,000-pair runs are notebook 04's none runs.
        # (A 4,000-pair size, in the study until 2026-12-03, cost about 5 of make reproduce's minutes.)
        scaling_sizes=[250, 500, 1000, 2000],
    ),
    "paper": dict(
        preset="paper-rn50", synth_pairs=0, synth_size=256, overrides=[],
        thetas=[0.6, 0.7, 0.8, 0.9, 1.0], fn_modes=["none", "fne", "fna"], seeds=[42, 43],
        backbones=["paper-rn50", "paper-vit-b-32", "paper-vit-l-14", "resnet50-imagenet", "cpu-tiny"],
    ),
}


def get_profile(name: str, data: str | Path | None = None, device: str = "auto",
                runs_dir: str | Path | None = None) -> Profile:
    """The settings of profile ``name``; the paper profile needs LEVIR-CC at ``data``."""
    if name not in PROFILES:
        raise ConfigError(f"profile '{name}' does not exist; available: {', '.join(PROFILES)}")
    spec = dict(PROFILES[name])
    if name == "paper":
        if data is None:
            raise ConfigError(
                "the paper profile needs LEVIR-CC: download it from "
                f"{LEVIR_CC_URL} and pass DATA=/path/to/LEVIR-CC (the folder holding LevirCCcaptions.json and images/)"
            )
        root = Path(data)
        if not (root / "LevirCCcaptions.json").is_file() or not (root / "images").is_dir():
            raise ConfigError(
                f"{root}: not a LEVIR-CC root (expected LevirCCcaptions.json and images/); "
                f"download the dataset from {LEVIR_CC_URL}"
            )
    profile = Profile(name=name, data=str(data) if data else None, device=device, **spec)
    if data is not None:
        profile.overrides = profile.overrides + [f"data.root={data}"]
    if device != "auto":
        profile.overrides = profile.overrides + [f"train.device={device}"]
    if runs_dir is not None:
        profile.runs_dir = Path(runs_dir)
    return profile


# the notebook parameters a user varies, beyond the profile itself
KNOBS = ("thetas", "fn_modes", "seeds", "backbones", "pairs", "epochs", "stock_shares")


def customise(profile: Profile, out: str | Path | None = None, changed: dict | None = None, **knobs) -> Profile:
    """``profile`` with the notebook parameters that were given (None keeps the profile's own):
    ``thetas``, ``fn_modes``, ``seeds``, ``backbones``, ``stock_shares`` (lists), ``pairs`` (synthetic pairs of every
    training and of the data notebooks) and ``epochs`` (of every training). The trainings this
    changes are stored beside the default ones (runs are stored by configuration); the figures and
    tables go to ``out``, or, when any parameter differs from the profile's and ``out`` is None, to
    ``runs/<profile>/reruns/<digest of the parameters>/``, never over the committed ``figures/`` and
    ``results/``. ``changed``: a notebook's own parameters that differ from its defaults (e.g.
    notebook 03's ``fn_mode``); any makes the rerun a customised one too."""
    unknown = set(knobs) - set(KNOBS)
    if unknown:
        raise ConfigError(f"unknown notebook parameter(s) {sorted(unknown)}; known: {', '.join(KNOBS)}")
    given = {k: v for k, v in knobs.items() if v is not None}
    lists = ("thetas", "fn_modes", "seeds", "backbones", "stock_shares")
    changes = {k: list(v) for k, v in given.items() if k in lists}
    changes = {k: v for k, v in changes.items() if v != getattr(profile, k)}
    extra = []
    if given.get("pairs") is not None and given["pairs"] != profile.synth_pairs:
        changes["synth_pairs"] = int(given["pairs"])
        extra.append(f"data.synth_pairs={int(given['pairs'])}")
    if given.get("epochs") is not None:
        extra.append(f"train.epochs={int(given['epochs'])}")
    if extra:  # last, so that they win over the profile's own settings of every training
        changes.update(overrides=profile.overrides + extra, main_overrides=profile.main_overrides + extra,
                       sweep_overrides=profile.sweep_overrides + extra,
                       recurrence_overrides=profile.recurrence_overrides + extra)
    custom = dataclasses.replace(profile, **changes)
    if out is not None:
        custom.output_dir = Path(out)
    elif changes or changed:
        key = {**given, **(changed or {})}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
        custom.output_dir = profile.run_dir("reruns", digest)
    return custom
