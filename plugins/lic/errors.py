"""Bad input is one line naming the flag or file and the fix; the CLIs exit with code 2."""

import argparse
import math
from typing import NoReturn


class UsageError(Exception):
    """A problem with the command line or an input file; its message is the whole story."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every flag that takes a value says its default in ``--help`` (as CompressAI's examples do),
    unless its help already does."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.required
            or action.nargs == 0
            or action.default is argparse.SUPPRESS
        ):
            return text
        return f"{text} (default: %(default)s)".lstrip()


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` (one line) instead of printing usage and exiting,
    and shows every flag's default in ``--help``."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


def finite(text: str) -> float:
    """argparse ``type`` of a real-valued flag: a finite number (``nan`` and ``inf`` are
    refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def patch_size(values: list[int]) -> tuple[int, int]:
    """``--patch-size S`` (a square) or ``--patch-size H W`` (CompressAI's form) as ``(H, W)``."""
    if len(values) not in (1, 2):
        raise UsageError(
            f"--patch-size {' '.join(map(str, values))}: one value (a square) or two (H W)"
        )
    return (values[0], values[-1])
