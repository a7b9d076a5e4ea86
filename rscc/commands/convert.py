"""`rscc convert`: the authors' released checkpoint → an rscc run directory."""
from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert the authors' checkpoint (pytorch_model.bin) into an rscc run directory",
        description="Reads the authors' state dict (.bin/.pt loaded with weights_only=True, or .safetensors), "
        "their config.json and vocabulary, and writes RUN_DIR/weights.safetensors, config.yaml (faithful "
        "quirks on) and vocab.json. Every key and shape is checked against the configuration.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the authors' pytorch_model.bin (or .pt/.safetensors)")
    parser.add_argument("--config", required=True, metavar="CONFIG.json", help="the authors' config.json")
    parser.add_argument("--vocab", required=True, metavar="VOCAB.json", help="the authors' levir_vocab.json")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    parser.set_defaults(func=run)


def run(args) -> int:
    from rscc.model.convert import convert_checkpoint

    out = convert_checkpoint(args.checkpoint, args.config, args.vocab, args.out)
    print(f"wrote {out / 'weights.safetensors'}, {out / 'config.yaml'}, {out / 'vocab.json'}")
    return 0
