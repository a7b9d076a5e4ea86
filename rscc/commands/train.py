"""`rscc train`: train RSICRC from a preset into a run directory; also the torchrun entry point.

``torchrun --nproc_per_node N -m rscc train --preset P --out RUN …`` runs this command in every
process (``python -m rscc.train …`` is the same command).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """\
Train RSICRC from a preset (rscc/presets/*.yaml) plus KEY=VALUE overrides, e.g.
  rscc train --preset cpu-tiny --data synthetic --out runs/tiny train.epochs=3 loss.theta=0.9
The run directory receives config.yaml, vocab.json, last/ and best/ checkpoints, log.csv and
TensorBoard events. --resume continues from last/ (bit-identical to an uninterrupted run on CPU).
Extend a run: rscc train --out RUN_DIR --resume train.epochs=N (N above the run's epochs) trains on
from its last checkpoint to N epochs. The warm-up is not repeated (it keeps its length in steps);
a constant rate stays constant; a cosine decay is stretched to end at the new last step, so a
finished cosine run restarts from a higher rate. Every other change of configuration is refused.
Several GPUs: torchrun --nproc_per_node N -m rscc train --preset P --data DIR --out RUN_DIR
"""


def add_arguments(parser) -> None:
    parser.add_argument("--preset", help="preset name (cpu-tiny, paper-rn50, ...); optional with --resume, "
                                         "which reads RUN_DIR/config.yaml")
    parser.add_argument("--data", help="LEVIR-CC root (holding LevirCCcaptions.json and images/), or 'synthetic' "
                                       "for the synthetic set of the data section (generated once, cached)")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint "
                                                              "(with train.epochs=N above its epochs: extend it)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="configuration overrides such as train.epochs=3 or loss.fn_mode=fne")


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a model into a run directory", description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)


def config_from_args(args):
    from rscc.config import RunConfig, available_presets, load_preset
    from rscc.errors import ConfigError

    saved = Path(args.out) / "config.yaml"
    if args.preset is not None:
        config = load_preset(args.preset)
    elif args.resume and saved.is_file():
        config = RunConfig.load(saved)
    else:
        raise ConfigError(f"--preset is required (available: {', '.join(available_presets())})"
                          + ("" if not args.resume else f"; {saved} does not exist to resume from"))
    if args.data is not None:
        root = None if args.data == "synthetic" else str(Path(args.data).expanduser().resolve())
        config.override({"data.root": root})
    if args.overrides:
        config.override(args.overrides)
    return config


def run(args) -> int:
    """Train, print the summary (rank 0); under torchrun every rank then leaves the process group together."""
    from rscc.training.distributed import is_rank_zero, leave_process_group, wait_for_every_rank
    from rscc.training.loop import train

    try:
        summary = train(config_from_args(args), args.out, resume=args.resume, progress=not args.no_progress)
        if summary.get("world_size", 1) == 1 or is_rank_zero():
            print(json.dumps(summary, indent=1))
        wait_for_every_rank()
        return 0
    finally:
        leave_process_group()
