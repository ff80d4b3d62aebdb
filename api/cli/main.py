"""The ``xlsearch`` command: index, search, delete, info.

Errors that xlsearch raises on purpose print ``error: <message>`` and exit 1;
usage errors exit 2 (argparse); anything else keeps its traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from ...indexer.allocator import retain_freed_memory
from ...indexer.errors import XlsearchError

log = logging.getLogger("xlsearch")

def build_parser() -> argparse.ArgumentParser:
    """The full parser; each subcommand module adds its own subparsers and handlers."""
    from . import commands, encode, evaluate, finetune, serve

    parser = argparse.ArgumentParser(prog="xlsearch", description="Cross-lingual semantic search: "
                                     "index documents in any language, query in any other.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    parser.add_argument("--version", action="version", version=f"xlsearch {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (commands, serve, evaluate, encode, finetune):
        module.add_parsers(subparsers)
    for subparser in subparsers.choices.values():  # `xlsearch index -v ...` as well as `xlsearch -v index ...`
        subparser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                               help="log progress details to stderr")
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("xlsearch")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 error, 2 usage)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_transformers()
    retain_freed_memory()  # encoding reuses freed activations instead of faulting in fresh pages
    try:
        return args.handler(args)
    except XlsearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; the index is unchanged since its last commit", file=sys.stderr)
        return 130


def _quiet_transformers() -> None:
    """Progress bars and warnings of the model libraries off, through their environment
    variables, so that commands which load no model do not import them to say so."""
    for name, value in (("TOKENIZERS_PARALLELISM", "false"), ("TRANSFORMERS_VERBOSITY", "error"),
                        ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(name, value)
    if "transformers" in sys.modules:  # imported already (by a caller of main): its settings are read
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()

if __name__ == "__main__":
    sys.exit(main())
