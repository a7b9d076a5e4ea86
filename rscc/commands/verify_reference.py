"""`rscc verify-reference`: compare our model with a fixture of the authors' outputs."""
from __future__ import annotations

import json

from rscc.errors import ConfigError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify-reference",
        help="check that our model reproduces the authors' outputs stored in a conformance fixture",
        description="Loads the fixture's weights (authors' key names) into our model, runs it in evaluation mode "
        "on the fixture's backbone features and prints the largest absolute error of each output, whether "
        "greedy decoding gives the same tokens for every pair, and the contrastive-loss cases. Exit status 0 "
        "only when everything is within tolerance (|got - expected| <= atol + 1e-5 |expected|).",
    )
    parser.add_argument("fixture", metavar="FIXTURE_DIR", help="e.g. ../shared/fixtures/rsicrc-reference")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--atol", action="append", default=[], metavar="OUTPUT=VALUE",
                        help="override an output's absolute tolerance (repeatable), e.g. vis_toks=1e-4")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rscc.model.verify import ATOL, format_report, verify_reference

    overrides = {}
    for item in args.atol:
        name, _, value = item.partition("=")
        if name not in ATOL:
            raise ConfigError(f"--atol {item}: unknown output '{name}'; valid: {', '.join(ATOL)}")
        try:
            overrides[name] = float(value)
        except ValueError:
            raise ConfigError(f"--atol {item}: '{value}' is not a number") from None
    report = verify_reference(args.fixture, overrides)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0 if report.passed else 1
