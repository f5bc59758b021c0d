"""The documented error types of KneeAlignmentLib.

Every failure caused by user input (a file, a landmark set, a model bundle) raises a
subclass of :class:`KneeAlignmentError` whose message names the problem; messages
never contain patient identifiers.
"""


class KneeAlignmentError(Exception):
    """Base class of every error KneeAlignmentLib raises on bad input."""


class ImageReadError(KneeAlignmentError):
    """An image (file or array) cannot be read as a single-frame 2D radiograph."""


class SchemaError(KneeAlignmentError):
    """A landmark schema file, or landmarks that do not fit a schema."""


class GeometryError(KneeAlignmentError):
    """Landmarks from which no angle can be computed (degenerate, NaN, ...)."""


class MarkupsError(KneeAlignmentError):
    """A Slicer markups (.mrk.json) file that cannot be read or written."""


class BundleError(KneeAlignmentError):
    """A model bundle that is missing, tampered with, or does not fit."""


class MeasurementError(KneeAlignmentError):
    """A measurement result file that cannot be read back."""


class OutputConflictError(KneeAlignmentError):
    """An output folder that already holds another input's results under the same case id."""
