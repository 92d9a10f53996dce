"""Errors a user can act on.

Every error the toolkit raises for bad input is an :class:`InterpError`: its message names
the problem *and* the fix, in one line, so the CLI can print it without a traceback and a
notebook user knows what to change. They subclass ``ValueError`` so generic callers that
catch bad-argument errors still catch them.
"""

from __future__ import annotations


class InterpError(ValueError):
    """Base class: bad input the user can fix. ``str(err)`` is one line: problem, then fix."""


class UnknownModelError(InterpError):
    """A model name that is neither a known alias, a local folder, nor a hub id."""


class ModelNotAvailableError(InterpError):
    """The model exists by name, but its weights cannot be loaded here (e.g. offline, not cached)."""


class LayerOutOfRangeError(InterpError):
    """A layer index outside ``[-n_layers, n_layers)``."""


class BadFactorError(InterpError):
    """A scaling factor that is not a finite number (or a per-row vector of the wrong shape)."""


class PromptError(InterpError):
    """An empty prompt, or one longer than the model's context."""


class TargetError(InterpError):
    """An empty target, or one that tokenizes to nothing."""
