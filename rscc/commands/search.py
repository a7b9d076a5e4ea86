"""`rscc search`: the gallery pairs that best match a sentence (text → pair retrieval).

    rscc search INDEX_DIR "new houses along a curved road" [--k 10] [--json]
"""
from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="find the indexed image pairs that best match a sentence",
        description="Embed QUERY with the text tower of the run that built INDEX_DIR (see `rscc index`) "
        "and print the K most similar pairs: rank, cosine score, id and the before/after image paths. "
        "The query is tokenised like the captions (lower case, no punctuation); words outside the "
        "model's vocabulary count as unknown, and only the first max_len - 2 words are used.",
    )
    parser.add_argument("index_dir", metavar="INDEX_DIR", help="folder written by `rscc index`")
    parser.add_argument("query", metavar="QUERY", help="a sentence describing a change, e.g. \"many buildings "
                        "are built along the road\"")
    parser.add_argument("--k", type=int, default=10, help="number of results (default 10)")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {rank, id, score, path_a, path_b}")
    parser.add_argument("--run", metavar="RUN_DIR", help="run directory (default: the one recorded in the index; "
                        "it must be the model that built the index)")
    parser.add_argument("--checkpoint", choices=["best", "last"],
                        help="checkpoint of the run (default: the one recorded in the index)")
    parser.add_argument("--backend", default="torch", choices=["torch", "faiss-flat", "faiss-ivf", "faiss-hnsw"],
                        help="torch: exact (default); faiss-flat: exact with FAISS; faiss-ivf / faiss-hnsw: "
                        "approximate, for galleries of millions (built once, cached under INDEX_DIR/faiss/)")
    parser.add_argument("--nprobe", type=int, default=16, help="faiss-ivf: cells visited per query (default 16)")
    parser.add_argument("--nlist", type=int,
                        help="faiss-ivf: number of cells (default: square root of the gallery size)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ... for the text tower (default auto)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rscc.errors import RsccError
    from rscc.index import search_text

    if args.k < 1:
        raise RsccError(f"--k must be at least 1, got {args.k}")
    if args.nprobe < 1:
        raise RsccError(f"--nprobe must be at least 1, got {args.nprobe}")
    results = search_text(args.index_dir, args.query, run_dir=args.run, k=args.k, backend=args.backend,
                          which=args.checkpoint, device=args.device, nprobe=args.nprobe, nlist=args.nlist)
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    width = max([len(r["id"]) for r in results] + [2])
    print(f"{'rank':>4}  {'score':>6}  {'id':<{width}}  before / after")
    for r in results:
        print(f"{r['rank']:>4}  {r['score']:>6.3f}  {r['id']:<{width}}  {r['path_a']}  {r['path_b']}")
    return 0
