"""The one error type of bertlab.checkpoints.

Importing weights (names, hf, google, bertlab_format) and training-state checkpoints
(training_state) raise the same class, so a command catches one type and prints its one line.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, incomplete, incompatible with this run, or
    not fitting the model. The message names the file or directory, the step or tensor, and what
    to do."""
