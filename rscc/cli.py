"""The ``rscc`` command.

Each sub-command lives in one module of :mod:`rscc.commands` that exposes
``register(subparsers)``; the module adds its parser and sets ``func`` (called with the parsed
arguments, returning an exit status). Modules are imported lazily by name so that
``rscc --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from rscc.errors import RsccError

# sub-command name -> module under rscc.commands
COMMANDS = {
    "data": "data",
    "synth": "synth",
    "convert": "convert",
    "verify-reference": "verify_reference",
    "caption": "caption",
    "train": "train",
    "evaluate": "evaluate",
    "score": "score",
    "index": "index",
    "search": "search",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rscc",
        description="Remote sensing image change captioning and retrieval (RSICRC, Ferrod et al. 2024).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMANDS.values():
        importlib.import_module(f"rscc.commands.{module}").register(sub)
    return parser


def describe_os_error(exc: OSError) -> str:
    """One line naming the file and what went wrong, e.g. ``/dev/null/x: Not a directory``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, FileExistsError) and exc.filename is not None and not Path(exc.filename).is_dir():
        reason = "a file is in the way (a folder was expected)"
    if exc.filename is None:
        return reason
    return f"{exc.filename}: {reason}" + (f" (-> {exc.filename2})" if exc.filename2 else "")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except RsccError as exc:
        print(f"rscc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rscc search ... | head` closed the pipe: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a path that cannot be read or written, a full disk: the user's to fix
        print(f"rscc {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rscc {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
