"""The `hf-transfer` command line: each subcommand lives in its own module under `hf_transfer.commands`."""

import argparse
import importlib
import logging
import sys

from huggingface_hub.errors import OfflineModeIsEnabled

# Subcommand modules; each defines `register(subparsers)` that adds its parser and sets `func`.
COMMAND_MODULES = [
    "hf_transfer.commands.demo",
    "hf_transfer.commands.push",
    "hf_transfer.commands.benchmark",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-transfer",
        description="Knowledge transfer for conditional diffusion models and normalizing flows.",
    )
    parser.add_argument("--log-level", default="INFO", help="Logging level: DEBUG, INFO, WARNING or ERROR.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OfflineModeIsEnabled) as error:
        # Input errors carry their own fix; a traceback would bury it.
        parser.exit(2, f"hf-transfer {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
