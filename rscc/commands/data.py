"""`rscc data stats|check`: describe or validate a LEVIR-CC dataset."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="describe or validate a LEVIR-CC dataset")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    stats = sub.add_parser(
        "stats",
        help="pairs, vocabulary, caption lengths, caption recurrence and false negatives per batch",
        description="PATH is a dataset root or a captions JSON alone. Per split: pairs, changed pairs and "
        "caption lengths; among changed pairs, the share whose first caption another pair shares, the share "
        "of the three most frequent first captions, and the share of captions that recur word for word; and, "
        "for a training batch of the split, the expected number of (pair, caption) samples that have a false "
        "negative (another pair's caption with similarity >= theta) and of false-negative pairs.",
    )
    stats.add_argument("path", help="LEVIR-CC root (holding LevirCCcaptions.json) or the JSON itself")
    stats.add_argument("--rule", default="authors", choices=["authors", "train"], help="vocabulary rule")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.add_argument("--theta", type=float, nargs="+", action="extend", metavar="T",
                       help="caption-similarity thresholds for the false negatives per batch (repeatable; default 1.0)")
    stats.add_argument("--batch-size", type=int, nargs="+", action="extend", metavar="B",
                       help="batch sizes for the false negatives per batch (repeatable; default 32)")
    stats.add_argument("--similarity", default="string", choices=["string", "sentence"],
                       help="caption similarity: exact equality of the raw captions (default, cheap) or the "
                       "sentence encoder's cosine (as loss.similarity_source)")
    stats.add_argument("--sentence-model", default=None, help="sentence encoder for --similarity sentence "
                       "(default: the bundled all-MiniLM-L6-v2)")
    stats.add_argument("--tolerance", type=float, default=None,
                       help="sentence similarity counts from theta - tolerance (default: loss.theta_tolerance)")
    stats.add_argument("--split", default="train", choices=["train", "val", "test"],
                       help="the split whose batches are counted (default train)")
    stats.set_defaults(func=run_stats)

    check = sub.add_parser(
        "check",
        help="validate layout, schema and images; exit 1 listing every problem",
        description="Checks the schema, 5 captions per pair, split names, that both images exist, "
        "decode and have the same size.",
    )
    check.add_argument("root", help="LEVIR-CC root")
    check.add_argument("--no-images", action="store_true", help="skip decoding images (schema only)")
    check.set_defaults(func=run_check)


def run_stats(args) -> int:
    from rscc.config import LossConfig
    from rscc.data.levircc import dataset_stats, load_pairs
    from rscc.data.stats import caption_stats

    stats = dataset_stats(args.path, rule=args.rule)
    tolerance = LossConfig().theta_tolerance if args.tolerance is None else args.tolerance
    stats.update(caption_stats(load_pairs(args.path), thetas=args.theta or [1.0], batch_sizes=args.batch_size or [32],
                               split=args.split, source=args.similarity, sentence_model=args.sentence_model,
                               tolerance=tolerance if args.similarity == "sentence" else 0.0,
                               progress=not args.json))
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{stats['source']}  (vocabulary, {stats['vocabulary_rule']} rule: {stats['vocabulary_size']} entries)")
    print(f"{'split':<6} {'pairs':>7} {'changed':>8} {'mean len':>9} {'changed len':>12} {'max len':>8}")
    for split, s in stats["splits"].items():
        mc = s["mean_changed_caption_tokens"]
        print(
            f"{split:<6} {s['pairs']:>7,} {s['changed']:>8,} {s['mean_caption_tokens']:>9.2f} "
            f"{(f'{mc:.2f}' if mc is not None else '-'):>12} {s['max_caption_tokens']:>8}"
        )
    _print_recurrence(stats)
    return 0


def _print_recurrence(stats: dict) -> None:
    print("\ncaption recurrence among changed pairs (LEVIR-CC train: 19.52 %, 7.22 %, 29.69 %)")
    print(f"{'split':<6} {'changed':>8} {'first caption recurs':>21} {'top-3 first captions':>21} "
          f"{'caption recurs':>15}")
    for split, r in stats["recurrence"].items():
        print(f"{split:<6} {r['changed_pairs']:>8,} {100 * r['first_caption_recurs']:>19.2f} % "
              f"{100 * r['top3_first_share']:>19.2f} % {100 * r['caption_recurs']:>13.2f} %")
    fn = stats["false_negatives"]
    head = stats["recurrence"].get(fn["split"], {}).get("top_first_captions", [])
    if head:
        print(f"most frequent first captions of changed {fn['split']} pairs:")
        for sentence, n in head:
            print(f"  {n:>5}  {sentence}")
    rows = fn["rows"]
    if rows:
        source = ("exact equality of the raw captions" if rows[0]["source"] == "string"
                  else "sentence-encoder cosine >= theta - tolerance")
        print(f"\nfalse negatives per {fn['split']} batch ({source}; {rows[0]['pool']:,} (pair, caption) samples)")
        print(f"{'theta':>6} {'batch':>6} {'samples with one':>17} {'share of batch':>15} {'FN pairs':>9}")
        for r in rows:
            print(f"{r['theta']:>6g} {r['batch_size']:>6} {r['samples_with_false_negative']:>17.3f} "
                  f"{100 * r['share_of_batch']:>13.2f} % {r['false_negative_pairs']:>9.3f}")


def run_check(args) -> int:
    from pathlib import Path

    from rscc.data.check import validate_dataset
    from rscc.errors import DatasetError

    if not Path(args.root).is_dir():  # nothing to check: a usage error (exit 2), not a broken dataset (exit 1)
        raise DatasetError(f"{args.root}: no such directory (expected a LEVIR-CC root holding LevirCCcaptions.json "
                           "and images/)")
    problems, summary = validate_dataset(args.root, images=not args.no_images, with_summary=True)
    if problems:
        for p in problems:
            print(f"{p.path}: {p.reason}")
        print(f"{len(problems)} problem(s) found in {args.root}")
        return 1
    print(summary)
    return 0
