"""`rscc caption`: describe the change between two images with a trained or converted run.

    rscc caption BEFORE.png AFTER.png --run RUN_DIR [--beam 3] [--attention OUT.png]
    rscc caption --pairs DIR --run RUN_DIR [--out captions.jsonl]

Images of any size are resized by the backbone's own transform. ``--pairs DIR`` captions every
file of ``DIR/A`` with the file of the same name in ``DIR/B`` and writes one JSON object a line
(``{"id", "before", "after", "caption"}``) to ``--out`` or to the standard output.
"""
from __future__ import annotations

import json
import sys
import warnings


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "caption",
        help="caption the change between two images (or every pair of a folder)",
        description="Caption the change between BEFORE and AFTER with the model of a run directory "
        "(config.yaml, vocab.json and weights). With --pairs DIR, caption every DIR/A/<name> against "
        "DIR/B/<name> and write JSON lines.",
    )
    parser.add_argument("before", nargs="?", help="image before the change (A)")
    parser.add_argument("after", nargs="?", help="image after the change (B)")
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory (trained or converted)")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"],
                        help="which checkpoint of a trained run (default: best)")
    parser.add_argument("--beam", type=int, default=1, help="beam size; 1 = the authors' greedy decoding (default)")
    parser.add_argument("--length-penalty", type=float, default=0.0,
                        help="beam search ranks by log-prob / length ** PENALTY (default 0)")
    parser.add_argument("--attention", metavar="OUT.png",
                        help="save the cross-attention over the after image (averaged over the caption's words)")
    parser.add_argument("--pairs", metavar="DIR", help="folder with A/ and B/ subfolders of matching file names")
    parser.add_argument("--out", metavar="FILE", help="JSON-lines output of --pairs (default: standard output)")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per batch with --pairs (default 32)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default auto)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rscc.errors import RsccError

    if args.pairs is None and (args.before is None or args.after is None):
        raise RsccError("give BEFORE and AFTER image files, or --pairs DIR")
    if args.pairs is not None and (args.before is not None or args.after is not None):
        raise RsccError("give either BEFORE AFTER or --pairs DIR, not both")
    if args.beam < 1:
        raise RsccError(f"--beam must be at least 1, got {args.beam}")
    if args.pairs is not None and args.attention:
        raise RsccError("--attention draws one pair; use it with BEFORE AFTER")

    from rscc.device import resolve_device
    from rscc.runs import load_run

    model, config, vocab = load_run(args.run, which=args.checkpoint, device=resolve_device(args.device))
    if args.pairs is not None:
        return _caption_folder(args, model, vocab)
    return _caption_one(args, model, vocab)


def _caption_one(args, model, vocab) -> int:
    from rscc.data.images import open_rgb
    from rscc.generate import caption_pairs

    before, after = open_rgb(args.before), open_rgb(args.after)
    if before.size != after.size:
        warnings.warn(f"{args.before} is {before.size[0]}x{before.size[1]} but {args.after} is "
                      f"{after.size[0]}x{after.size[1]}; both are resized by the backbone transform",
                      stacklevel=1)
    transform = model.backbone.transform
    (result,) = caption_pairs(model, vocab, transform(before)[None], transform(after)[None], beam=args.beam,
                              length_penalty=args.length_penalty, with_attention=True)
    print(result.text)
    if args.attention:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from rscc.plots import plot_attention

        fig = plot_attention(before, after, result.attention, result.text)
        fig.savefig(args.attention, dpi=100)
        plt.close(fig)
        print(f"attention map saved to {args.attention}", file=sys.stderr)
    return 0


def _caption_folder(args, model, vocab) -> int:
    import torch

    from rscc.data.images import folder_pairs, open_rgb
    from rscc.generate import caption_pairs

    pairs = folder_pairs(args.pairs)
    transform = model.backbone.transform
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for start in range(0, len(pairs), args.batch_size):
            chunk = pairs[start:start + args.batch_size]
            img_a = torch.stack([transform(open_rgb(a)) for a, _ in chunk])
            img_b = torch.stack([transform(open_rgb(b)) for _, b in chunk])
            captions = caption_pairs(model, vocab, img_a, img_b, beam=args.beam,
                                     length_penalty=args.length_penalty, batch_size=args.batch_size)
            for (a, b), caption in zip(chunk, captions):
                out.write(json.dumps({"id": a.stem, "before": str(a), "after": str(b), "caption": caption}) + "\n")
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"{len(pairs)} captions written to {args.out}", file=sys.stderr)
    return 0

