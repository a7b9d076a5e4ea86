"""`rscc synth`: write a synthetic LEVIR-CC dataset (images + captions) for tests and demos."""
from __future__ import annotations

import time


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate a synthetic LEVIR-CC dataset with truthful change captions",
        description="Writes OUT/LevirCCcaptions.json and OUT/images/{train,val,test}/{A,B}/*.png in the "
        "LEVIR-CC layout: aerial-looking bi-temporal scenes (bareland, grass, trees, roads, houses), "
        "half of them changed (houses built or demolished, roads built or extended, trees cut or "
        "planted, parking lots, residential areas), each with five captions that state the change, "
        "its quantity and its location. The same --seed gives the same bytes.",
    )
    parser.add_argument("--out", required=True, help="dataset root to write (replaced if it is a synthetic dataset)")
    parser.add_argument("--pairs", required=True, type=int, help="number of pairs (split 6815:1333:1929 like LEVIR-CC)")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels (default 256, as LEVIR-CC)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--stock-share", type=float, default=None, metavar="P",
                        help="how often changed pairs' captions are stock sentences that recur across pairs, 0..1 "
                        "(default 0.25: LEVIR-CC train's recurrence; 1.0: most changed pairs share a handful of "
                        "stock sentences); images do not depend on it")
    parser.add_argument("--if-missing", action="store_true",
                        help="do nothing when OUT already holds a dataset made with the same parameters")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rscc.data.synth import STOCK_SHARE, ensure_synthetic, make_synthetic

    make = ensure_synthetic if args.if_missing else make_synthetic
    share = STOCK_SHARE if args.stock_share is None else args.stock_share
    start = time.perf_counter()
    root = make(args.out, args.pairs, size=args.size, seed=args.seed, progress=not args.quiet, workers=args.workers,
                stock_share=share)
    seconds = time.perf_counter() - start
    print(f"{root}: {args.pairs} synthetic pairs at {args.size} px, seed {args.seed}, stock share {share:g} "
          f"({seconds:.1f} s)")
    return 0
