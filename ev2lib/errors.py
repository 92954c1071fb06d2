"""Errors ev2lib raises for bad input. Each carries a one-line message that says what to do.

Command-line entry points catch :class:`Ev2Error` and print ``error: <message>`` instead of a traceback.
"""


class Ev2Error(Exception):
    """Base class of every error ev2lib raises on purpose."""


class ConfigError(Ev2Error, ValueError):
    """An unknown model name or a stage table / training config that cannot be built."""


class WeightsError(Ev2Error, ValueError):
    """A state dict or checkpoint that does not fit the model, is corrupt, or cannot be downloaded."""


class InputSizeError(Ev2Error, ValueError):
    """An input image smaller than the network accepts."""


def cli_main(fn):
    """Run ``fn()`` as a command-line program: an :class:`Ev2Error` becomes one line on stderr and exit code 2."""
    import sys

    try:
        return fn()
    except Ev2Error as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
