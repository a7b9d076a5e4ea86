"""`rscc score`: caption metrics of a predictions file, without a model.

The file has one JSON object a line::

    {"id": "test_000001", "prediction": "…", "references": ["…", …], "changed": true}

``changed`` is optional; when every line has it, changed-only scores are added. A line whose
id was already seen is dropped (the first one is kept) and the count is reported.
``--format ccexpert`` reads the published CCExpert-7B file instead (fields ``uid``, ``pred``,
``change_caption``); its change flag is derived from the references (see
:func:`convert_ccexpert`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rscc.errors import RsccError

FORMATS = ("rscc", "ccexpert")


def _read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON-lines file."""
    path = Path(path)
    if not path.is_file():
        raise RsccError(f"{path}: no such predictions file")
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RsccError(f"{path}, line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise RsccError(f"{path}, line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    return rows


def _field(path, number: int, row: dict, name: str, kind: type | tuple):
    if name not in row:
        raise RsccError(f"{path}, line {number}: missing field {name!r}")
    value = row[name]
    if not isinstance(value, kind):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise RsccError(f"{path}, line {number}: field {name!r} must be {expected}, got {value!r}")
    return value


def _references(path, number: int, row: dict, name: str) -> list[str]:
    refs = _field(path, number, row, name, list)
    if not refs or not all(isinstance(r, str) for r in refs):
        raise RsccError(f"{path}, line {number}: field {name!r} must be a non-empty list of strings")
    return refs


def read_predictions(path: str | Path) -> list[dict]:
    """Rows ``{"id", "prediction", "references"[, "changed"]}`` of an rscc predictions file, in order,
    duplicates included (see :func:`deduplicate`)."""
    rows = []
    for number, row in _read_jsonl(path):
        out = {"id": _field(path, number, row, "id", (str, int)),
               "prediction": _field(path, number, row, "prediction", str),
               "references": _references(path, number, row, "references")}
        if "changed" in row:
            out["changed"] = _field(path, number, row, "changed", bool)
        rows.append(out)
    return rows


def convert_ccexpert(path: str | Path) -> list[dict]:
    """The published CCExpert-7B predictions (``uid``, ``pred``, ``change_caption``) as rscc rows.

    ``changed`` is False exactly when the references are LEVIR-CC's five stock no-change
    sentences. Duplicates are kept (see :func:`deduplicate`).
    """
    from rscc.metrics.captioning import is_no_change

    rows = []
    for number, row in _read_jsonl(path):
        refs = _references(path, number, row, "change_caption")
        rows.append({"id": _field(path, number, row, "uid", (str, int)),
                     "prediction": _field(path, number, row, "pred", str),
                     "references": refs,
                     "changed": not is_no_change(refs)})
    return rows


def deduplicate(rows: list[dict]) -> tuple[list[dict], int]:
    """Keep the first row of every id; return the kept rows and how many were dropped."""
    kept: dict = {}
    for row in rows:
        kept.setdefault(row["id"], row)
    return list(kept.values()), len(rows) - len(kept)


def score_rows(rows: list[dict], protocol: str = "tokens", meteor: bool = True, spice: bool = True) -> dict:
    """:func:`rscc.metrics.captioning.score_captions` on deduplicated rows; changed-only scores
    are added when every row has a ``changed`` flag."""
    from rscc.metrics.captioning import score_captions

    predictions = {row["id"]: row["prediction"] for row in rows}
    references = {row["id"]: row["references"] for row in rows}
    flagged = sum("changed" in row for row in rows)
    if 0 < flagged < len(rows):
        raise RsccError(f"the 'changed' flag is on {flagged} of {len(rows)} predictions; "
                        "give it on every line or on none")
    changed = {row["id"]: row["changed"] for row in rows} if flagged else None
    return score_captions(predictions, references, protocol=protocol, changed=changed, meteor=meteor, spice=spice)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score",
        help="caption metrics (BLEU, METEOR, ROUGE-L, CIDEr-D, S*m) of a predictions file",
        description="Score a JSON-lines predictions file, one object a line: "
                    '{"id": ..., "prediction": "...", "references": ["...", ...], "changed": true|false}. '
                    "'changed' is optional; when present, changed-only scores are added. Duplicate ids keep "
                    "their first line. Scores are x100.",
    )
    parser.add_argument("predictions", metavar="PREDICTIONS.jsonl", help="the predictions file")
    parser.add_argument("--protocol", choices=("tokens", "raw"), default="tokens",
                        help="tokens: lower-case, punctuation removed (every LEVIR-CC paper; default); "
                             "raw: strings scored verbatim, as the authors' code does with the JSON 'raw' references")
    parser.add_argument("--format", choices=FORMATS, default="rscc",
                        help="rscc (default) or ccexpert: the published CCExpert-7B file "
                             "(uid, pred, change_caption; change flag derived from the references)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR (a Java subprocess) and S*m")
    parser.add_argument("--no-spice", action="store_true", help="do not try SPICE")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rscc.metrics.captioning import format_table

    rows = convert_ccexpert(args.predictions) if args.format == "ccexpert" else read_predictions(args.predictions)
    if not rows:
        raise RsccError(f"{args.predictions}: no predictions in the file")
    rows, dropped = deduplicate(rows)
    result = score_rows(rows, protocol=args.protocol, meteor=not args.no_meteor, spice=not args.no_spice)
    result["file"] = str(args.predictions)
    result["duplicates_dropped"] = dropped
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
        return 0
    print(f"{args.predictions}: {len(rows)} predictions"
          + (f" ({dropped} duplicate ids dropped, first line kept)" if dropped else ""))
    print(format_table(result))
    return 0
