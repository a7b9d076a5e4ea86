"""The study's tables (notebooks 04-06): every run's metrics in the paper's layout, beside the
published LEVIR-CC numbers of METHOD §7, written to ``results/`` as Markdown and CSV.

Our numbers and the literature's are never mixed up: every row carries a ``source`` —
``"published, LEVIR-CC test"`` for the constants below, ``"this run, synthetic data"`` or
``"this run, LEVIR-CC"`` (:func:`data_label`) for ours. Scores are ×100; captioning rows use the
``tokens`` protocol unless a column says otherwise (METHOD §6.2).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from rscc.experiments.profiles import Profile

MAIN_RUN = "03_joint_training"  # the main training of notebook 03
PUBLISHED = "published, LEVIR-CC test"
LEVIR_FLOORS = "computed on the LEVIR-CC test captions (METHOD §7.3)"
CAPTION_METRICS = ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "S*m")
SYSTEMS = {
    "model": None,  # the run's own name
    "always_no_change": "floor: always 'the scene is the same as before'",
    "change_flag_and_fixed_sentence": "floor: perfect change flag + one fixed sentence",
}

# METHOD §7, LEVIR-CC test, ×100 (tokens protocol, all pairs). Empty cells were not reported.
PUBLISHED_CAPTIONING = pd.DataFrame(
    [
        ("RSICRC (reported)", None, 59.04, None, None, None, PUBLISHED),
        ("RSICCformer", 84.72, 62.77, 39.61, 74.12, 134.12, PUBLISHED),
        ("Chg2Cap", 86.14, 64.39, 40.03, 75.12, 136.61, PUBLISHED),
        ("RSCaMa", 85.79, 65.24, 39.91, 75.24, 136.56, PUBLISHED),
        ("MV-CC (uses change masks)", 86.37, 66.22, 40.20, 75.73, 138.28, PUBLISHED),
        ("CCExpert-7B (multimodal LLM)", 86.65, 65.49, 41.82, 76.55, 143.32, PUBLISHED),
        (SYSTEMS["always_no_change"], None, 51.5, None, None, 101.9, LEVIR_FLOORS),
        (SYSTEMS["change_flag_and_fixed_sentence"], None, 61.6, None, None, 121.4, LEVIR_FLOORS),
    ],
    columns=["method", "BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D", "source"],
)
# The only retrieval number the paper reports: R@5 under the authors' protocol (not a hit rate).
PUBLISHED_RETRIEVAL = pd.DataFrame(
    [("RSICRC (reported)", "authors", "all", 2.85, PUBLISHED)],
    columns=["method", "protocol", "subset", "R@5", "source"],
)


def data_label(profile: Profile) -> str:
    """How our rows are labelled: "this run, LEVIR-CC" or "this run, synthetic data"."""
    return "this run, LEVIR-CC" if profile.data else "this run, synthetic data"


# ----------------------------------------------------------------------------- reading runs
def collect_metrics(profile: Profile) -> dict[str, dict]:
    """{run name: metrics.json} for every evaluated run under ``runs/<profile>/``; the name is
    the run folder relative to it (``03_joint_training``, ``04_ablation/fna-theta0.9-seed42``)."""
    base = profile.run_dir()
    found = {}
    for path in sorted(base.glob("**/eval/metrics.json")):
        try:
            found[path.parent.parent.relative_to(base).as_posix()] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a run being written; it is picked up next time
    return found


def _get(tree: Mapping, *keys, default=None):
    for key in keys:
        if not isinstance(tree, Mapping) or tree.get(key) is None:
            return default
        tree = tree[key]
    return tree


def key_metrics(metrics: Mapping) -> dict:
    """The handful of numbers the ablation and backbone tables compare (tokens protocol)."""
    model = _get(metrics, "captioning", "model", "tokens", default={})
    authors = _get(metrics, "retrieval", "authors", default={})
    t2p = _get(metrics, "retrieval", "cross_modal", "changed", "text_to_pair", default={})
    return {
        "CIDEr-D": _get(model, "all", "CIDEr-D"),
        "CIDEr-D changed": _get(model, "changed", "CIDEr-D"),
        "BLEU-4": _get(model, "all", "BLEU-4"),
        "BLEU-4 changed": _get(model, "changed", "BLEU-4"),
        "authors R@5": _get(authors, "all", "R@5"),
        "authors MRR@10": _get(authors, "all", "MRR@10"),
        "authors R@5 changed": _get(authors, "changed", "R@5"),
        "text→pair R@10 changed": _get(t2p, "R@10"),
        "chance R@10 changed": _get(t2p, "chance_R@10"),
    }


# ----------------------------------------------------------------------------- tables
def captioning_table(runs: Mapping[str, dict], source: str, floors: bool = True) -> pd.DataFrame:
    """One row per (run or floor, protocol, subset); columns BLEU-1, BLEU-4, METEOR, ROUGE-L,
    CIDEr-D, S*m. The floors depend only on the data, so they are taken from the first run."""
    rows = []
    for n, (name, metrics) in enumerate(runs.items()):
        for system, label in SYSTEMS.items():
            if system != "model" and (not floors or n > 0):
                continue
            for protocol in ("tokens", "raw"):
                for subset in ("all", "changed"):
                    scores = _get(metrics, "captioning", system, protocol, subset)
                    if scores is None:
                        continue
                    rows.append({"source": source, "method": label or name, "protocol": protocol, "subset": subset,
                                 **{m: scores.get(m) for m in CAPTION_METRICS}, "pairs": scores.get("n")})
    return pd.DataFrame(rows, columns=["source", "method", "protocol", "subset", *CAPTION_METRICS, "pairs"])


RETRIEVAL_COLUMNS = (
    "source", "method", "subset", "authors P@5", "authors R@5", "authors R@10", "authors MRR@10",
    "text→pair R@1", "text→pair R@5", "text→pair R@10", "text→pair chance R@10", "text→pair mAP",
    "pair→text R@10", "gallery",
)


def retrieval_table(runs: Mapping[str, dict], source: str) -> pd.DataFrame:
    """One row per (run, subset): the authors' protocol (P@5, R@5, R@10, MRR@10; R@k is
    hits/|relevant|) and the cross-modal one (text → pair hit rates with chance, mAP, pair → text)."""
    rows = []
    for name, metrics in runs.items():
        for subset in ("all", "changed"):
            authors = _get(metrics, "retrieval", "authors", subset)
            cross = _get(metrics, "retrieval", "cross_modal", subset)
            if authors is None and cross is None:
                continue
            t2p, p2t = _get(cross, "text_to_pair", default={}), _get(cross, "pair_to_text", default={})
            rows.append({
                "source": source, "method": name, "subset": subset,
                **{f"authors {k}": _get(authors, k) for k in ("P@5", "R@5", "R@10", "MRR@10")},
                **{f"text→pair {k}": t2p.get(k) for k in ("R@1", "R@5", "R@10")},
                "text→pair chance R@10": t2p.get("chance_R@10"), "text→pair mAP": t2p.get("mAP"),
                "pair→text R@10": p2t.get("R@10"), "gallery": t2p.get("n_gallery"),
            })
    return pd.DataFrame(rows, columns=list(RETRIEVAL_COLUMNS))


def hit_rates_vs_chance(metrics: Mapping) -> pd.DataFrame:
    """Cross-modal text → pair hit rates R@1/5/10 of a run beside a random ranking's, long form:
    columns subset, k, ranking ("model" or "chance"), R (percent)."""
    rows = []
    for subset in ("all", "changed"):
        t2p = _get(metrics, "retrieval", "cross_modal", subset, "text_to_pair")
        for k in (1, 5, 10) if t2p else ():
            rows += [{"subset": subset, "k": f"R@{k}", "ranking": "model", "R": t2p[f"R@{k}"]},
                     {"subset": subset, "k": f"R@{k}", "ranking": "chance", "R": t2p[f"chance_R@{k}"]}]
    return pd.DataFrame(rows, columns=["subset", "k", "ranking", "R"])


def plan_table(runs: Mapping[str, dict], plan: Iterable[Mapping], columns: Iterable[str]) -> pd.DataFrame:
    """The key metrics (:func:`key_metrics`) of the planned runs that have metrics, with the
    plan's ``columns`` (e.g. fn_mode, theta, seed) in front; planned runs without metrics are
    left out."""
    columns = list(columns)
    rows = [{**{c: entry[c] for c in columns}, "run": entry["name"], **key_metrics(runs[entry["name"]])}
            for entry in plan if entry["name"] in runs]
    return pd.DataFrame(rows)


def published_captioning() -> pd.DataFrame:
    return PUBLISHED_CAPTIONING.copy()


# ----------------------------------------------------------------------------- writing
def to_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub Markdown table (numbers rounded to ``digits``; missing values as an em dash)."""
    def cell(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    frame = table.reset_index() if not isinstance(table.index, pd.RangeIndex) else table
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, results_dir: str | Path, name: str, title: str | None = None,
                note: str | None = None) -> tuple[Path, Path]:
    """Write ``name.md`` (a title, the table, a note) and ``name.csv`` to ``results_dir``."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    md, csv = results_dir / f"{name}.md", results_dir / f"{name}.csv"
    parts = ([f"## {title}\n"] if title else []) + [to_markdown(table)] + ([f"\n{note}\n"] if note else [])
    md.write_text("\n".join(parts))
    (table.reset_index() if not isinstance(table.index, pd.RangeIndex) else table).to_csv(csv, index=False)
    return md, csv


# ----------------------------------------------------------------------------- backbone weights
def weights_label(model_config) -> str:
    """Which weights a configuration's backbone would load, without building it: "RemoteCLIP",
    "ImageNet", "aerial (geoembed)" or "random init" (with the reason in brackets when weights were
    asked for but are not available). See :func:`rscc.model.backbones.weights_label`."""
    from rscc.model.backbones import weights_label

    return weights_label(model_config)


# ----------------------------------------------------------------------------- notebook 04
def above_chance_table(table: pd.DataFrame, by: str, metric: str = "text→pair R@10 changed",
                       chance: str = "chance R@10 changed") -> pd.DataFrame:
    """Per value of ``by``: ``metric`` over the seeds with its 95 % t-interval, the chance level
    (the same for every run of one test split), the ratio, and whether the interval excludes it."""
    from rscc.experiments.compare import setting_intervals

    result = setting_intervals(table, by, [metric]).set_index(by)
    result["chance"] = table.groupby(by, sort=False)[chance].mean()
    result["× chance"] = result[metric] / result["chance"]
    result["above chance"] = result[f"{metric} low"] > result["chance"]
    return result
