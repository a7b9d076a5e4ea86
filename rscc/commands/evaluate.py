"""`rscc evaluate`: captions, captioning metrics (with their floors) and retrieval of a run on a split."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Generate a caption for every pair of a split with the run's model (batched, key/value-cached
greedy decoding as in the authors' code, or beam search), then score them and the pairs'
embeddings. Writes OUT/predictions.jsonl ({"id", "prediction", "references", "changed"} a line)
and OUT/metrics.json:
  captioning  BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, S*m of the model and of two floors (always
              "the scene is the same as before"; a perfect change flag + one fixed sentence),
              under both reference protocols (tokens, raw), on all and on changed pairs
  retrieval   the authors' text -> pair protocol (P/R/MRR@k) and the cross-modal one (hit rates,
              ranks, mAP, both directions), on all and on changed pairs
Example: rscc evaluate runs/tiny --split test --beam 3
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", help="caption a split and score captions and retrieval",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (trained or converted)")
    parser.add_argument("--data", metavar="DIR",
                        help="LEVIR-CC root, or 'synthetic' for the synthetic set of the run's data section "
                             "(default: the run's data.root; the synthetic set when that is null)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="default: test")
    parser.add_argument("--beam", type=int, default=1, help="beam size; 1 = the authors' greedy decoding (default)")
    parser.add_argument("--length-penalty", type=float, default=0.0,
                        help="beam search ranks by log-prob / length ** PENALTY (default 0)")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"],
                        help="which checkpoint of a trained run (default: best)")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: RUN_DIR/eval-SPLIT[-beamK])")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per batch (default 64)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default auto)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (it needs Java)")
    parser.add_argument("--no-retrieval", action="store_true", help="captioning metrics only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rscc.errors import RsccError
    from rscc.evaluate import evaluate_run, format_metrics

    if args.beam < 1:
        raise RsccError(f"--beam must be at least 1, got {args.beam}")
    metrics = evaluate_run(args.run_dir, data=args.data, split=args.split, beam=args.beam,
                           length_penalty=args.length_penalty, out_dir=args.out, which=args.checkpoint,
                           device=args.device, batch_size=args.batch_size, meteor=not args.no_meteor,
                           retrieval=not args.no_retrieval, progress=not args.no_progress)
    print(format_metrics(metrics))
    print(f"\nwritten: {metrics['out_dir']}/predictions.jsonl, {metrics['out_dir']}/metrics.json")
    return 0
