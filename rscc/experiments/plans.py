"""What each study notebook trains: its plan, a list of entries ``{name, overrides, ...}`` that
:func:`rscc.experiments.study.run_plan` trains or reuses. Plans only build configurations; they
train nothing. Notebook 04: :func:`ablation_plan`, :func:`diagnosis_plan`; 05: :func:`backbone_plan`;
03's λ study: :func:`lambda_plan`; 08: :func:`scaling_plan`; 09: :func:`recurrence_plan`."""
from __future__ import annotations

from rscc.experiments.profiles import Profile
from rscc.experiments.tables import MAIN_RUN


# ----------------------------------------------------------------------------- sweeps (notebooks 04, 05)
def ablation_plan(profile: Profile) -> list[dict]:
    """The trainings of the false-negative ablation (notebook 04): ``none`` once per seed (it does
    not depend on θ), ``fne`` and ``fna`` at every θ of the profile, for every seed, each with the
    profile's ``sweep_overrides`` then ``ablation_overrides``. Each entry:
    name (``04_ablation/<mode>[-theta<θ>]-seed<seed>``), fn_mode, theta (None for none), seed,
    overrides."""
    plan = []  # seeds inner: the first trainings of a pool differ in seed, so build different feature caches
    for mode in profile.fn_modes:
        for theta in ([None] if mode == "none" else profile.thetas):
            for seed in profile.seeds:
                tag = mode if theta is None else f"{mode}-theta{theta:g}"
                overrides = list(profile.sweep_overrides) + list(profile.ablation_overrides)
                overrides += [f"loss.fn_mode={mode}", f"train.seed={seed}"]
                overrides += [] if theta is None else [f"loss.theta={theta}"]
                plan.append({"name": f"04_ablation/{tag}-seed{seed}", "fn_mode": mode, "theta": theta, "seed": seed,
                             "overrides": overrides})
    return plan


RANDOM_WEIGHTS = ":random"  # "<preset>:random": the preset's architecture with random weights


def backbone_plan(profile: Profile) -> list[dict]:
    """The trainings of the backbone comparison (notebook 05): one per backbone of
    ``profile.backbones`` and seed of ``profile.seeds``, seeds outer (two workers start on two
    different backbones, so each pretrained feature cache is computed once and then shared by the
    seeds). ``<preset>:random`` is the preset with ``model.pretrained=null``: the same
    architecture with random weights, the comparison that isolates the weights. The paper
    presets (fine-tuned backbones) get ``profile.backbone_overrides`` first (the quick profile
    shrinks them to a frozen backbone under cpu-tiny's head); the CPU-sized presets (frozen) are
    used as they are; then the profile's ``sweep_overrides`` and ``ablation_overrides`` with
    ``fn_mode none`` and the seed: every backbone trains like notebook 04's ``none`` runs (the
    contrastive setting its diagnosis chose, no false-negative handling to confound the
    comparison), so cpu-tiny's runs *are* those runs and are reused. Each entry: name
    (``05_backbones/<backbone>-seed<seed>``), backbone, preset, seed, overrides."""
    from rscc.config import load_preset

    plan = []
    for seed in profile.seeds:
        for backbone in profile.backbones:
            preset, _, variant = backbone.partition(":")
            overrides = [] if load_preset(preset).model.freeze_backbone else list(profile.backbone_overrides)
            overrides += ["model.pretrained=null"] if f":{variant}" == RANDOM_WEIGHTS else []
            plan.append({"name": f"05_backbones/{backbone.replace(':', '-')}-seed{seed}", "backbone": backbone,
                         "preset": preset, "seed": seed,
                         "overrides": overrides + list(profile.sweep_overrides) + list(profile.ablation_overrides)
                         + ["loss.fn_mode=none", f"train.seed={seed}"]})
    return plan


# The diagnosis of notebook 04: which of the authors' contrastive-loss choices keeps a short CPU
# training at chance retrieval. Each setting is the sweeps' training with fn_mode none (so that
# false-negative handling plays no part) and these overrides; "authors" is their loss as it is.
DIAGNOSIS_SETTINGS = {
    "authors": [],  # one direction (image -> text), fixed temperature 0.01
    "learnable-temperature": ["loss.learnable_temperature=true"],
    "symmetric": ["loss.symmetric=true"],
    "symmetric+learnable-temperature": ["loss.symmetric=true", "loss.learnable_temperature=true"],
}


def diagnosis_plan(profile: Profile, settings: list[str] | None = None, seeds: list[int] | None = None) -> list[dict]:
    """Trainings of the loss diagnosis: every setting of ``DIAGNOSIS_SETTINGS`` (or ``settings``)
    for every seed of the profile (or ``seeds``), named ``04_diagnosis/<setting>-seed<seed>``.
    Each entry: name, setting, seed, overrides."""
    plan = []  # seeds inner: the first trainings of a pool differ in seed, so build different feature caches
    for setting in settings or list(DIAGNOSIS_SETTINGS):
        for seed in seeds or profile.seeds:
            overrides = list(profile.sweep_overrides) + ["loss.fn_mode=none", f"train.seed={seed}"]
            plan.append({"name": f"04_diagnosis/{setting}-seed{seed}", "setting": setting, "seed": seed,
                         "overrides": overrides + DIAGNOSIS_SETTINGS[setting]})
    return plan


# ----------------------------------------------------------------------------- notebook 03: λ
def lambda_plan(profile: Profile) -> list[dict]:
    """The trainings of the joint-training study (notebook 03): every loss weight λ of
    ``profile.lambdas`` (``L_cap + λ L_con``) for every seed, each trained like the false-negative
    ablation (``sweep_overrides`` then ``ablation_overrides``) with FNA at the ablation's first θ,
    so that the preset's λ is notebook 04's ``fna`` run of the same seed (reused, never trained
    twice). λ = 0 trains captioning alone: the contrastive term is multiplied by zero, so the
    attention pooling that makes the pair embedding gets no gradient. Each entry: name
    (``03_lambda/lam<λ>-seed<seed>``), lam, seed, overrides."""
    theta = profile.thetas[0]
    plan = []  # seeds inner, as in ablation_plan: the first trainings of a pool build different feature caches
    for lam in profile.lambdas:
        for seed in profile.seeds:
            overrides = list(profile.sweep_overrides) + list(profile.ablation_overrides)
            overrides += ["loss.fn_mode=fna", f"loss.theta={theta}", f"loss.lam={lam}", f"train.seed={seed}"]
            plan.append({"name": f"03_lambda/lam{lam:g}-seed{seed}", "lam": float(lam), "seed": seed,
                         "overrides": overrides})
    return plan


def scaling_plan(profile: Profile, sizes: list[int] | None = None) -> list[dict]:
    """The trainings of the data-scaling study (notebook 08): one per size of
    ``profile.scaling_sizes`` (or ``sizes``: synthetic pairs of the whole set, all three splits) and
    seed, each the sweeps' training (``sweep_overrides`` then ``ablation_overrides``, fn_mode none:
    notebook 04's ``none`` runs, which the size of the sweeps' own set reuses) with the same number
    of epochs, so a bigger set also gets more optimisation steps. Largest sizes first, so that two
    workers start on the longest trainings. Each entry: name (``08_scaling/pairs<N>-seed<seed>``),
    pairs, seed, overrides."""
    plan = []
    for pairs in sorted(sizes or profile.scaling_sizes, reverse=True):
        for seed in profile.seeds:
            overrides = list(profile.sweep_overrides) + list(profile.ablation_overrides)
            overrides += ["loss.fn_mode=none", f"train.seed={seed}", f"data.synth_pairs={int(pairs)}"]
            plan.append({"name": f"08_scaling/pairs{int(pairs)}-seed{seed}", "pairs": int(pairs), "seed": seed,
                         "overrides": overrides})
    return plan


def recurrence_levels(profile: Profile) -> list[float | None]:
    """The caption-recurrence levels of notebook 09: the profile's stock shares
    (``data.synth_stock_share``) on synthetic data; ``[None]`` (the captions as they are) on LEVIR-CC."""
    return [None] if profile.data else [float(share) for share in profile.stock_shares]


def recurrence_thetas(profile: Profile) -> list[float]:
    """The θ of notebook 09's FNE and FNA trainings: ``recurrence_thetas``, or the profile's ``thetas``."""
    return list(profile.recurrence_thetas or profile.thetas)


def recurrence_overrides(profile: Profile, share: float | None) -> list[str]:
    """The overrides of a notebook-09 training at stock share ``share``, before its fn_mode, θ and
    seed: the ablation's (``sweep_overrides``, ``ablation_overrides``), then ``recurrence_overrides``."""
    overrides = list(profile.sweep_overrides) + list(profile.ablation_overrides) + list(profile.recurrence_overrides)
    return overrides + ([] if share is None else [f"data.synth_stock_share={share:g}"])


def recurrence_plan(profile: Profile) -> list[dict]:
    """The trainings of notebook 09 (false negatives vs caption recurrence): at every level of
    :func:`recurrence_levels`, the ablation's settings (``none`` once per seed, ``fne`` and
    ``fna`` at every θ of :func:`recurrence_thetas`) for every seed, trained as
    :func:`recurrence_overrides` says. A run is notebook 04's ablation run when the configuration
    is the same (the default share, no ``recurrence_overrides``, the same θ), reused. Each entry: name
    (``09_recurrence/stock<share>/<mode>[-theta<θ>]-seed<seed>``), stock_share (None on LEVIR-CC),
    fn_mode, theta (None for none), seed, overrides."""
    plan = []
    for share in recurrence_levels(profile):
        level = "dataset" if share is None else f"stock{share:g}"
        for mode in profile.fn_modes:
            for theta in ([None] if mode == "none" else recurrence_thetas(profile)):
                for seed in profile.seeds:  # seeds inner, as in ablation_plan
                    tag = mode if theta is None else f"{mode}-theta{theta:g}"
                    overrides = recurrence_overrides(profile, share) + [f"loss.fn_mode={mode}", f"train.seed={seed}"]
                    overrides += [] if theta is None else [f"loss.theta={theta}"]
                    plan.append({"name": f"09_recurrence/{level}/{tag}-seed{seed}", "stock_share": share,
                                 "fn_mode": mode, "theta": theta, "seed": seed, "overrides": overrides})
    return plan


# ----------------------------------------------------------------------------- every notebook's trainings
MAIN_FN_MODE, MAIN_THETA = "fna", 1.0  # notebook 03's defaults for its main run (its parameters cell)


def main_run_overrides(profile: Profile, fn_mode: str = MAIN_FN_MODE, theta: float = MAIN_THETA) -> list[str]:
    """The overrides of notebook 03's main run: the profile's ``main_overrides``, then the
    false-negative mode and θ."""
    return list(profile.main_overrides) + [f"loss.fn_mode={fn_mode}", f"loss.theta={theta}"]


def study_plan(profile: Profile, synthetic_only: bool = True) -> list[dict]:
    """Every training the study notebooks make with their own parameters, in the order the notebooks
    would first make them (notebook 04's runs before the plans that reuse them): 04's ablation and
    trained diagnosis, 03's λ study, 05's backbones, then (``synthetic_only``) 08's sizes and 09's
    recurrence levels, and 03's main run. Entries are the plans' own, with ``evaluate`` (keyword
    arguments of the evaluation: the main run scores METEOR, the sweeps do not, as the notebooks
    do). Entries of the same configuration appear more than once (a shared run);
    :func:`rscc.experiments.study.train_study` trains each configuration once."""
    sweeps = ablation_plan(profile)
    if profile.diagnosis:
        sweeps += diagnosis_plan(profile, settings=profile.diagnosis)
    sweeps += lambda_plan(profile) + backbone_plan(profile)
    if synthetic_only:
        sweeps += scaling_plan(profile) + recurrence_plan(profile)
    main = {"name": MAIN_RUN, "overrides": main_run_overrides(profile), "evaluate": {"meteor": True}}
    return [{**entry, "evaluate": {"meteor": False}} for entry in sweeps] + [main]
