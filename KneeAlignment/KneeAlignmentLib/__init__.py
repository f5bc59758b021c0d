"""KneeAlignmentLib: the Slicer-free core of the KneeAlignment extension.

Measures the anatomical tibiofemoral angle (aTFA) on AP knee radiographs from
landmarks (schema, geometry, image input, markups files, inference).
Research software: not for clinical use.
"""

__version__ = "0.1.0"
