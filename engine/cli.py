"""The command line every runner shares: `--config FILE key=value ...`, parsed to a checked Config."""
from __future__ import annotations

import argparse

from engine import config as C


def cli_parser(description: str) -> argparse.ArgumentParser:
    """The parser of `--config FILE key=value ...`; a runner adds its own flags to it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", help="experiment YAML under configs/ (default: schema defaults)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. fame.beta=0.3 train.epochs=2")
    return p


def parse_cli_args(p: argparse.ArgumentParser, argv: list[str] | None = None) -> tuple[C.Config, argparse.Namespace]:
    """(validated Config, the other flags); config errors exit with the message."""
    a = p.parse_args(argv)
    try:
        return C.load_config(a.config, a.overrides), a
    except C.ConfigError as e:
        p.error(str(e))


def parse_cli(description: str, argv: list[str] | None = None) -> C.Config:
    """`--config FILE key=value ...` -> a validated Config (errors exit with the message)."""
    return parse_cli_args(cli_parser(description), argv)[0]
