"""Evaluate a run on one split: captions, captioning metrics with their floors, and retrieval.

:func:`evaluate_run` generates a caption for every pair of the split with the cached, batched
decoder (greedy, the authors' decoding, or beam search), embeds the pairs and their captions,
and writes two files to the output folder:

``predictions.jsonl``
    ``{"id", "prediction", "references", "changed"}`` a line; the references are the dataset's
    ``raw`` strings, so ``rscc score`` recomputes either protocol from the file.
``per_pair.jsonl``
    ``{"id", "changed", "CIDEr-D", "CIDEr-D changed", "text→pair hit@10", "text→pair hit@10 changed"}``
    a line (×100; tokens protocol; the ``changed`` values are None for unchanged pairs): each pair's
    share of the corpus scores, whose means over the pairs are the CIDEr-D and cross-modal
    text → pair R@10 of ``metrics.json`` (:func:`per_pair_scores`), so that two runs can be
    compared pair by pair (a paired bootstrap, :mod:`rscc.stats`).
``metrics.json``
    - ``captioning``: for the model and the two floors of METHOD §6.5 (``always_no_change``: every
      pair gets "the scene is the same as before"; ``change_flag_and_fixed_sentence``: a perfect
      change flag and one fixed sentence, the most frequent first caption of the changed
      training pairs, for every changed pair), each under both reference protocols (``tokens``,
      ``raw``), on all pairs and on changed pairs only (:func:`rscc.metrics.captioning.score_captions`).
    - ``retrieval``: the authors' text → pair protocol (P/R/MRR@k, first captions as queries,
      relevant = same label or first-caption sentence embeddings at cosine ≥ θ) and the standard
      cross-modal protocol (hit rates, ranks, mAP in both directions, all five captions, identical
      captions counted as correct), each on all pairs and on changed pairs only
      (:mod:`rscc.metrics.retrieval`).
"""
from __future__ import annotations

import json
from collections import Counter
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from rscc.config import RunConfig
from rscc.data.levircc import CAPTIONS_PER_PAIR, LevirCCDataset, Pair, collate, load_pairs
from rscc.data.root import configured_root
from rscc.device import resolve_device
from rscc.errors import DatasetError, RsccError
from rscc.generate import caption_text, generate, id_to_word
from rscc.metrics.captioning import PROTOCOLS
from rscc.runs import find_weights, load_run


def data_root(config: RunConfig, data: str | Path | None = None, progress: bool = True) -> Path:
    """Where to evaluate: ``data`` (a LEVIR-CC root, or "synthetic"), else the run's ``data.root``;
    the synthetic set of the run's data section (as the trainer made it) when that is None."""
    if data is not None and str(data) != "synthetic":
        return Path(data).expanduser()
    data_config = replace(config.data, root=None) if data is not None else config.data
    return configured_root(data_config, progress=progress)


@torch.no_grad()
def run_model(model, vocab, pairs: list[Pair], root: Path, beam: int = 1, length_penalty: float = 0.0,
              batch_size: int = 64, num_workers: int = 0, max_len: int = 41, progress: bool = True) -> dict:
    """Captions and embeddings of ``pairs``: {"captions": [str], "vis_emb": (N, d), "text_emb": (5N, d)}
    with caption ``5 * i + k`` the k-th caption of pair i."""
    device = next(model.parameters()).device
    dataset = LevirCCDataset(pairs, vocab, root, transform=model.backbone.transform, per_caption=False,
                             max_len=max_len)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    words = id_to_word(vocab)
    captions, vis_embs = [], []
    for batch in tqdm(loader, desc="captioning", disable=not progress):
        vis_emb, vis_toks = model.encode_images(batch["img_a"].to(device), batch["img_b"].to(device))
        result = generate(model, vis_toks, beam=beam, length_penalty=length_penalty)
        captions.extend(caption_text(ids, words) for ids in result.sequences())
        vis_embs.append(vis_emb.float().cpu())
    encoded = dataset.captions  # all five captions of every pair
    text_embs = []
    for start in range(0, len(encoded.input_ids), 4 * batch_size):
        rows = slice(start, start + 4 * batch_size)
        text_embs.append(model.encode_text(encoded.input_ids[rows].to(device),
                                           encoded.pad_mask[rows].to(device)).float().cpu())
    return {"captions": captions, "vis_emb": torch.cat(vis_embs), "text_emb": torch.cat(text_embs)}


def write_predictions(path: Path, pairs: list[Pair], captions: list[str]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for pair, caption in zip(pairs, captions):
            row = {"id": Path(pair.filename).stem, "prediction": caption, "references": list(pair.raws),
                   "changed": pair.changed}
            out.write(json.dumps(row) + "\n")


def captioning_scores(pairs: list[Pair], captions: list[str], train_pairs: list[Pair], meteor: bool = True) -> dict:
    """The model's and the two floors' scores under both protocols (see the module docstring)."""
    from rscc.metrics.captioning import NO_CHANGE_SENTENCE, MeteorProcess, floor_predictions, score_captions

    ids = [Path(p.filename).stem for p in pairs]
    references = {i: list(p.raws) for i, p in zip(ids, pairs)}
    changed = {i: p.changed for i, p in zip(ids, pairs)}
    train_changed = [p.sentences[0] for p in train_pairs if p.changed]
    if train_changed:
        source = "the most frequent first caption of the changed training pairs"
    else:  # a dataset without a training split: fall back to the evaluated split itself
        train_changed = [p.sentences[0] for p in pairs if p.changed] or [NO_CHANGE_SENTENCE]  # unused then
        source = "the most frequent first caption of the evaluated split's changed pairs (no training split)"
    floors = floor_predictions(references, changed, train_changed_first_captions=train_changed)
    systems = {"model": dict(zip(ids, captions)), **floors}
    result = {}
    # one METEOR Java process serves the six score sets (each start-up costs seconds)
    with (MeteorProcess() if meteor else nullcontext(False)) as scorer:
        for name, predictions in systems.items():
            result[name] = {protocol: score_captions(predictions, references, protocol=protocol, changed=changed,
                                                     meteor=scorer, spice=False)
                            for protocol in PROTOCOLS}
    fixed = next((floors["change_flag_and_fixed_sentence"][i] for i in ids if changed[i]), None)
    result["change_flag_and_fixed_sentence"]["sentence"] = fixed
    result["change_flag_and_fixed_sentence"]["sentence_source"] = source
    return result


def per_pair_scores(pairs: list[Pair], captions: list[str], vis_emb: torch.Tensor,
                    text_emb: torch.Tensor) -> list[dict]:
    """One row per pair (see ``per_pair.jsonl`` in the module docstring): its CIDEr-D (the
    document frequencies of the scored set, all pairs or changed pairs) and the share of its five
    captions whose own pair, or a pair with an identical caption, ranks in the text → pair top 10
    (ties pessimistic, as :func:`rscc.metrics.retrieval.cross_modal_retrieval` ranks them)."""
    from pycocoevalcap.cider.cider import Cider

    from rscc.metrics.captioning import prepare
    from rscc.metrics.retrieval import caption_duplicates

    rows = [{"id": Path(p.filename).stem, "changed": p.changed, "CIDEr-D": None, "CIDEr-D changed": None,
             "text→pair hit@10": None, "text→pair hit@10 changed": None} for p in pairs]
    for suffix, keep in (("", list(range(len(pairs)))), (" changed", [i for i, p in enumerate(pairs) if p.changed])):
        if not keep:
            continue
        gts = {n: [prepare(r, "tokens") for r in pairs[i].raws] for n, i in enumerate(keep)}
        res = {n: [prepare(captions[i], "tokens")] for n, i in enumerate(keep)}
        cider = Cider().compute_score(gts, res)[1]  # (len(keep),) in the order of gts
        text_to_pair = torch.arange(len(keep)).repeat_interleave(CAPTIONS_PER_PAIR)
        correct = caption_duplicates([pairs[i].sentences[k] for i in keep for k in range(CAPTIONS_PER_PAIR)],
                                     text_to_pair)                                    # (5n, n)
        rows_of = torch.tensor([CAPTIONS_PER_PAIR * i + k for i in keep for k in range(CAPTIONS_PER_PAIR)])
        scores = torch.nn.functional.normalize(text_emb[rows_of].float(), dim=1) @ \
            torch.nn.functional.normalize(vis_emb[keep].float(), dim=1).T               # (5n, n)
        best = scores.masked_fill(~correct, float("-inf")).amax(1, keepdim=True)         # (5n, 1)
        first_rank = 1 + ((scores >= best) & ~correct).sum(1)                           # pessimistic ties
        hits = (first_rank <= 10).float().view(len(keep), CAPTIONS_PER_PAIR).mean(1)    # (n,)
        for n, i in enumerate(keep):
            rows[i][f"CIDEr-D{suffix}"] = 100 * float(cider[n])
            rows[i][f"text→pair hit@10{suffix}"] = 100 * float(hits[n])
    return rows


def relevance_embeddings(config: RunConfig, first_captions: list[str],
                         progress: bool = True) -> tuple[torch.Tensor | None, str]:
    """Unit-norm vectors whose inner products decide the authors' caption relevance (≥ θ), and a
    description. ``string`` similarity: one-hot caption identities (1 for equal captions)."""
    from rscc.metrics.captioning import normalise_tokens

    if config.loss.similarity_source == "string":
        keys = [normalise_tokens(c) for c in first_captions]
        index = {k: n for n, k in enumerate(dict.fromkeys(keys))}
        one_hot = torch.zeros(len(keys), len(index))
        one_hot[torch.arange(len(keys)), torch.tensor([index[k] for k in keys])] = 1.0
        return one_hot, "identical first captions (similarity_source: string)"
    from rscc.false_negatives import caption_embeddings

    try:
        emb = caption_embeddings(first_captions, config.loss.sentence_model, progress=progress)
    except RsccError as exc:
        return None, f"labels only: the sentence model is unavailable ({exc})"
    return torch.from_numpy(emb), f"first-caption embeddings of {config.loss.sentence_model}"


def retrieval_scores(config: RunConfig, pairs: list[Pair], vis_emb: torch.Tensor, text_emb: torch.Tensor,
                     progress: bool = True) -> dict:
    from rscc.metrics.retrieval import authors_retrieval, caption_duplicates, cross_modal_retrieval

    labels = torch.tensor([p.label for p in pairs])
    first = text_emb[::CAPTIONS_PER_PAIR]  # (N, d) the first caption of every pair
    caption_emb, relevance = relevance_embeddings(config, [p.raws[0] for p in pairs], progress=progress)
    theta = config.loss.theta - config.loss.theta_tolerance
    authors = {subset: authors_retrieval(vis_emb, first, labels, caption_emb=caption_emb, theta=theta,
                                         changed_only=subset == "changed")
               for subset in ("all", "changed")}
    authors["relevance"] = relevance

    cross_modal = {}
    for subset in ("all", "changed"):
        keep = [i for i, p in enumerate(pairs) if subset == "all" or p.changed]
        if not keep:
            cross_modal[subset] = None
            continue
        rows = torch.tensor([CAPTIONS_PER_PAIR * i + k for i in keep for k in range(CAPTIONS_PER_PAIR)])
        text_to_pair = torch.arange(len(keep)).repeat_interleave(CAPTIONS_PER_PAIR)
        captions = [pairs[i].sentences[k] for i in keep for k in range(CAPTIONS_PER_PAIR)]
        cross_modal[subset] = cross_modal_retrieval(vis_emb[keep], text_emb[rows], text_to_pair,
                                                    duplicates=caption_duplicates(captions, text_to_pair))
    cross_modal["correct"] = "a caption's own pair and every pair with an identical caption (tokens form)"
    return {"authors": authors, "cross_modal": cross_modal}


def evaluate_run(run_dir: str | Path, data: str | Path | None = None, split: str = "test", beam: int = 1,
                 length_penalty: float = 0.0, out_dir: str | Path | None = None, which: str = "best",
                 device: str = "auto", batch_size: int = 64, meteor: bool = True, retrieval: bool = True,
                 progress: bool = True) -> dict:
    """Evaluate the run in ``run_dir`` on ``split``; write predictions.jsonl and metrics.json to
    ``out_dir`` (default ``RUN_DIR/eval-<split>``, ``-beam<k>`` added for beam search) and return
    the metrics."""
    run_dir = Path(run_dir)
    model, config, vocab = load_run(run_dir, which=which, device=resolve_device(device))
    root = data_root(config, data, progress=progress)
    all_pairs = load_pairs(root)
    pairs = [p for p in all_pairs if p.split == split]
    if not pairs:
        present = sorted(Counter(p.split for p in all_pairs))
        raise DatasetError(f"{root}: no pair in split '{split}' (splits present: {', '.join(present)})")
    out = Path(out_dir) if out_dir is not None else run_dir / (f"eval-{split}" + (f"-beam{beam}" if beam > 1 else ""))
    out.mkdir(parents=True, exist_ok=True)

    outputs = run_model(model, vocab, pairs, root, beam=beam, length_penalty=length_penalty, batch_size=batch_size,
                        num_workers=config.data.num_workers, max_len=config.data.max_len, progress=progress)
    write_predictions(out / "predictions.jsonl", pairs, outputs["captions"])
    metrics = {
        "run": str(run_dir),
        "weights": str(find_weights(run_dir, which)),
        "data": str(root),
        "split": split,
        "pairs": len(pairs),
        "changed_pairs": sum(p.changed for p in pairs),
        "decoding": {"beam": beam, "length_penalty": length_penalty if beam > 1 else None,
                     "max_steps": config.model.max_len},
        "captioning": captioning_scores(pairs, outputs["captions"], [p for p in all_pairs if p.split == "train"],
                                        meteor=meteor),
    }
    if retrieval:
        metrics["retrieval"] = retrieval_scores(config, pairs, outputs["vis_emb"], outputs["text_emb"], progress)
    with (out / "per_pair.jsonl").open("w", encoding="utf-8") as per_pair:
        for row in per_pair_scores(pairs, outputs["captions"], outputs["vis_emb"], outputs["text_emb"]):
            per_pair.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    metrics["out_dir"] = str(out)
    return metrics


# ---------------------------------------------------------------------------- the printed table
CAPTION_COLUMNS = ("BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D")
SYSTEMS = {"model": "model", "always_no_change": "floor: no change",
           "change_flag_and_fixed_sentence": "floor: flag + 1 sentence"}


def format_metrics(metrics: dict) -> str:
    """A compact text summary of :func:`evaluate_run`'s result."""
    lines = [f"{metrics['split']}: {metrics['pairs']} pairs ({metrics['changed_pairs']} changed), "
             f"beam {metrics['decoding']['beam']}, data {metrics['data']}", ""]
    header = f"{'captioning':<26}{'protocol':<9}{'subset':<8}" + "".join(f"{c:>9}" for c in CAPTION_COLUMNS)
    lines.append(header)
    for key, label in SYSTEMS.items():
        for protocol in PROTOCOLS:
            result = metrics["captioning"][key][protocol]
            for subset in ("all", "changed"):
                row = result.get(subset)
                if row is None or not row.get("n"):
                    continue
                cells = "".join(f"{'—':>9}" if row.get(c) is None else f"{row[c]:9.2f}" for c in CAPTION_COLUMNS)
                lines.append(f"{label:<26}{protocol:<9}{subset:<8}{cells}")
    if "retrieval" in metrics:
        authors = metrics["retrieval"]["authors"]
        lines += ["", f"retrieval, authors' protocol (text → pair, first captions; relevance: {authors['relevance']})",
                  f"{'subset':<10}" + "".join(f"{c:>9}" for c in ("P@1", "P@5", "R@5", "R@10", "MRR@10"))]
        for subset in ("all", "changed"):
            row = authors[subset]
            lines.append(f"{subset:<10}" + "".join(f"{row[c]:9.2f}" for c in ("P@1", "P@5", "R@5", "R@10", "MRR@10")))
        lines += ["", "retrieval, cross-modal (all captions; R@k hit rates, chance in brackets)",
                  f"{'subset':<10}{'direction':<14}" + "".join(f"{c:>15}" for c in ("R@1", "R@5", "R@10"))
                  + f"{'med rank':>10}{'mAP':>8}"]
        for subset in ("all", "changed"):
            result = metrics["retrieval"]["cross_modal"][subset]
            if result is None:
                continue
            for direction in ("text_to_pair", "pair_to_text"):
                row = result[direction]
                cells = "".join(f"{row[f'R@{k}']:7.2f} ({row[f'chance_R@{k}']:5.2f})" for k in (1, 5, 10))
                lines.append(f"{subset:<10}{direction.replace('_to_', '→'):<14}{cells}"
                             f"{row['median_rank']:10.1f}{row['mAP']:8.2f}")
    return "\n".join(lines)
