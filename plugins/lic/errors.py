"""Bad input is one line naming the flag or file and the fix; the CLIs exit with code 2."""


class UsageError(Exception):
    """A problem with the command line or an input file; its message is the whole story."""
