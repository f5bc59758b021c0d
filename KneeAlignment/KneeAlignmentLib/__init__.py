"""KneeAlignmentLib: the Slicer-free core of the KneeAlignment extension.

Measures the anatomical tibiofemoral angle (aTFA) on AP knee radiographs from
landmarks (schema, geometry, image input, markups files, inference).
Research use only. Not for clinical use.
"""

__version__ = "0.1.0"

#: The research-use disclaimer, in one wording wherever people read results: command-line
#: output, result JSON, overlays (and so the Secondary Capture), reports, the Slicer module.
DISCLAIMER = "Research use only. Not for clinical use."
