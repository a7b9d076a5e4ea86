"""`rscc index`: embed a folder of image pairs (or LEVIR-CC) into a searchable gallery index.

    rscc index PAIRS_DIR --run RUN_DIR --out INDEX_DIR [--split test] [--dtype float16]

Running it again over the same or a larger folder embeds only the pairs not yet in the index.
"""
from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "index",
        help="embed image pairs into a gallery index for text search",
        description="Embed every image pair of PAIRS_DIR with the image tower of a run and store the "
        "unit-norm pair embeddings, their ids (file names) and image paths in INDEX_DIR (index.json + "
        "safetensors shards). PAIRS_DIR is a folder with A/ (before) and B/ (after) sub-folders of "
        "matching file names, or a LEVIR-CC root (holding LevirCCcaptions.json; choose a split with "
        "--split). Re-running adds only pairs whose id is not in the index yet; an index built by "
        "another model is refused. Search it with `rscc search INDEX_DIR \"a sentence\"`.",
    )
    parser.add_argument("pairs_dir", metavar="PAIRS_DIR", help="folder with A/ and B/, or a LEVIR-CC root")
    parser.add_argument("--run", required=True, metavar="RUN_DIR", help="run directory (trained or converted)")
    parser.add_argument("--out", required=True, metavar="INDEX_DIR",
                        help="index folder, created if missing, appended to if it exists")
    parser.add_argument("--split", choices=["train", "val", "test"],
                        help="with a LEVIR-CC root: index only this split (default: all pairs)")
    parser.add_argument("--dtype", choices=["float32", "float16"],
                        help="storage precision; float16 halves disk and memory (default: the existing "
                        "index's, float32 for a new one)")
    parser.add_argument("--checkpoint", default="best", choices=["best", "last"],
                        help="which checkpoint of a trained run (default: best)")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per batch (default 32)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from rscc.errors import RsccError
    from rscc.index import INDEX_FILE, build_index, index_info

    if args.batch_size < 1:
        raise RsccError(f"--batch-size must be at least 1, got {args.batch_size}")
    before = index_info(args.out)["count"] if (Path(args.out) / INDEX_FILE).is_file() else 0
    index = build_index(args.pairs_dir, args.run, args.out, split=args.split, batch_size=args.batch_size,
                        dtype=args.dtype, progress=not args.no_progress, which=args.checkpoint, device=args.device)
    added = len(index) - before
    print(f"{added} pair(s) added, {len(index)} in {args.out} ({index.dtype}, d={index.dim}, "
          f"model {index.model['id'][:12]})")
    return 0
