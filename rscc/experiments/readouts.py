"""What the study notebooks show beside the trained runs' metrics: a run's captions of chosen pairs
(notebook 03), the false negatives a training batch holds at each θ (notebook 04) and the caption
recurrence of each level of notebook 09. They read runs and datasets; they train nothing."""
from __future__ import annotations

from pathlib import Path

from rscc.experiments.plans import recurrence_levels, recurrence_overrides, recurrence_thetas
from rscc.experiments.profiles import Profile
from rscc.experiments.study import run_config


# ----------------------------------------------------------------------------- notebook 03
def caption_examples(run_dir: str | Path, split: str = "val", changed: int = 6, unchanged: int = 2,
                     which: str = "best"):
    """Greedy captions of the first ``changed`` changed and ``unchanged`` unchanged pairs of
    ``split``, beside the pair's first reference caption. Returns a DataFrame with columns pair,
    changed, generated, reference (first of five), and ``in references`` (the generated caption
    is, word for word, one of the pair's five references)."""
    import pandas as pd
    import torch

    from rscc.data.levircc import LevirCCDataset, collate, load_pairs
    from rscc.evaluate import data_root
    from rscc.generate import caption_pairs
    from rscc.metrics.captioning import normalise_tokens
    from rscc.runs import load_run

    model, config, vocab = load_run(run_dir, which=which)
    root = data_root(config, progress=False)
    pairs = [p for p in load_pairs(root) if p.split == split]
    chosen = [p for p in pairs if p.changed][:changed] + [p for p in pairs if not p.changed][:unchanged]
    dataset = LevirCCDataset(chosen, vocab, root, transform=model.backbone.transform, per_caption=False)
    batch = collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        generated = caption_pairs(model, vocab, batch["img_a"], batch["img_b"])
    rows = [{"pair": p.filename, "changed": p.changed, "generated": text, "reference": p.raws[0].strip(),
             "in references": normalise_tokens(text) in {normalise_tokens(r) for r in p.raws}}
            for p, text in zip(chosen, generated)]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- notebook 04
def false_negatives_per_batch(profile: Profile, batch_size: int | None = None, batches: int = 200,
                              seed: int = 0, progress: bool = True):
    """How many batch pairs each θ of the profile turns from negatives into false negatives.

    Random batches of ``batch_size`` training samples (one per caption, as the trainer draws
    them; default: the batch size of the ablation's trainings) are scored with their
    sentence encoder and tolerance: per batch, the ordered pairs (i, j), i ≠ j, with different
    labels (y_i ≠ y_j, so negatives without FNE) whose captions have similarity ≥ θ − tolerance.
    Returns a DataFrame indexed by θ: mean false negatives per batch, mean negatives per batch,
    and their ratio in percent."""
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from rscc.data.levircc import load_pairs
    from rscc.evaluate import data_root
    from rscc.losses import false_negative_mask
    from rscc.training.data import similarity_inputs

    config = run_config(profile, list(profile.sweep_overrides) + list(profile.ablation_overrides)
                        + ["loss.fn_mode=fne"])  # as the ablation trains
    batch_size = batch_size or config.train.batch_size
    pairs = load_pairs(data_root(config, progress=progress))  # the sweeps' dataset (sweep_overrides may resize it)
    train, val = [p for p in pairs if p.split == "train"], [p for p in pairs if p.split == "val"]
    # train + val in one call, as the trainer does: the embeddings come from the same disk cache
    embeddings = similarity_inputs(config, train + val, progress=progress)[: 5 * len(train)]  # (5N, dim) or keys (5N,)
    labels = torch.tensor([p.label for p in train]).repeat_interleave(5)  # (5N,) one per caption
    source = config.loss.similarity_source
    generator = torch.Generator().manual_seed(seed)
    counts = torch.zeros(len(profile.thetas))
    negatives = 0.0
    for _ in tqdm(range(batches), desc="counting false negatives", disable=not progress):
        idx = torch.randperm(len(labels), generator=generator)[:batch_size]
        different = labels[idx, None] != labels[None, idx]  # (B, B), the diagonal is False
        negatives += float(different.sum())
        for k, theta in enumerate(profile.thetas):
            mask = false_negative_mask(*_similarity_args(embeddings[idx], source), theta=theta,
                                       tolerance=config.loss.theta_tolerance, source=source)
            counts[k] += float((mask & different).sum())
    table = pd.DataFrame({"theta": profile.thetas, "false negatives per batch": (counts / batches).tolist()})
    table["negatives per batch"] = negatives / batches
    table["false negatives (% of negatives)"] = 100 * table["false negatives per batch"] / table["negatives per batch"]
    return table.set_index("theta")


def _similarity_args(rows, source: str) -> tuple:
    """(sentence_embeddings, captions) for :func:`rscc.losses.false_negative_mask`."""
    return (rows, None) if source == "sentence" else (None, rows)


# ----------------------------------------------------------------------------- notebook 09
def recurrence_table(profile: Profile, thetas: list[float] | None = None, progress: bool = True):
    """Per recurrence level of notebook 09 and θ (default: :func:`recurrence_thetas`), measured on
    the training split of the dataset its trainings use: the caption recurrence of the changed pairs
    (:mod:`rscc.data.stats`, in %)
    and the expected false negatives in a training batch (the ablation's batch size, sentence
    encoder and tolerance; exact expectations, no sampling). ``false negatives per batch`` counts
    ordered pairs (i, j), i ≠ j, as :func:`false_negatives_per_batch` (notebook 04) does.
    Returns a DataFrame with one row per (stock share, θ)."""
    import pandas as pd

    from rscc.data import stats
    from rscc.data.levircc import load_pairs
    from rscc.evaluate import data_root

    rows = []
    for share in recurrence_levels(profile):
        config = run_config(profile, recurrence_overrides(profile, share) + ["loss.fn_mode=fne"])
        train = [p for p in load_pairs(data_root(config, progress=progress)) if p.split == "train"]
        recurrence = stats.pair_recurrence(train)
        loss, batch = config.loss, config.train.batch_size
        counts = stats.false_negatives_per_batch(train, thetas or recurrence_thetas(profile), [batch],
                                                 source=loss.similarity_source, sentence_model=loss.sentence_model,
                                                 tolerance=loss.theta_tolerance)
        for row in counts:
            rows.append({"stock share": share, "theta": row["theta"], "batch": batch,
                         "first caption recurs (%)": 100 * recurrence.first_caption_recurs,
                         "top-3 first captions (%)": 100 * recurrence.top3_first_share,
                         "captions recur (%)": 100 * recurrence.caption_recurs,
                         "false negatives per batch": 2 * row["false_negative_pairs"],
                         "samples with a false negative (%)": 100 * row["share_of_batch"]})
    return pd.DataFrame(rows)
