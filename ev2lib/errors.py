"""Every error ev2lib raises on purpose. Each carries a one-line message that says what to do.

Command-line entry points run through :func:`cli_main`, which prints ``error: <message>`` instead of a traceback.
"""


class Ev2Error(Exception):
    """Base class of every error ev2lib raises on purpose."""


class ConfigError(Ev2Error, ValueError):
    """An unknown model, profile or option, or a stage table / training config that cannot be built."""


class WeightsError(Ev2Error, ValueError):
    """A state dict or checkpoint that does not fit the model, is corrupt, or cannot be downloaded."""


class InputSizeError(Ev2Error, ValueError):
    """An input image smaller than the network accepts."""


class DataError(Ev2Error, ValueError):
    """An unknown dataset, one that cannot be downloaded, or data files that are missing or damaged."""


class TrainingError(Ev2Error, RuntimeError):
    """Training cannot go on (a NaN/inf loss); the last good checkpoint is kept."""


class ResultsError(Ev2Error, ValueError):
    """A results file that is missing, malformed, or may not be written (a smoke run)."""


class SearchLogError(Ev2Error, ValueError):
    """A NAS search log that cannot be resumed: damaged, or written by a different search."""


def cli_main(fn):
    """Run ``fn()`` as a command-line program: an :class:`Ev2Error` becomes one line on stderr and exit code 2."""
    import sys
    try:
        return fn()
    except Ev2Error as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
