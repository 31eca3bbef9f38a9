"""The one exception type entry points answer with a message instead of a traceback.

A ``Refused`` error stops a job for a reason the user can act on: bad input (a raw record, a
processed file, a cache that does not match), a run directory in use or holding another run,
a checkpoint or dataset changed since training. Its message names the file, line or key,
says what is wrong and what to do. The console scripts print it on stderr and exit with
status 2 (``recsys.cli.refusals_exit``), as they do for a ``ConfigError``; anything else is a
bug or an environment failure and keeps its traceback.
"""

from __future__ import annotations


class Refused(RuntimeError):
    """A job stopped for a reason the message states, with what to do instead."""
