"""Bad input is one line naming the flag or file and the fix; the CLIs exit with code 2."""

import argparse
from typing import NoReturn


class UsageError(Exception):
    """A problem with the command line or an input file; its message is the whole story."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` (one line) instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")
