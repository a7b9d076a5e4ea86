"""`rscc data stats|check`: describe or validate a LEVIR-CC dataset."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser("data", help="describe or validate a LEVIR-CC dataset")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True

    stats = sub.add_parser(
        "stats",
        help="pairs, changed pairs, vocabulary size and caption lengths per split",
        description="PATH is a dataset root or a captions JSON alone.",
    )
    stats.add_argument("path", help="LEVIR-CC root (holding LevirCCcaptions.json) or the JSON itself")
    stats.add_argument("--rule", default="authors", choices=["authors", "train"], help="vocabulary rule")
    stats.add_argument("--json", action="store_true", help="print JSON")
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
    from rscc.data.levircc import dataset_stats

    stats = dataset_stats(args.path, rule=args.rule)
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
    return 0


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
