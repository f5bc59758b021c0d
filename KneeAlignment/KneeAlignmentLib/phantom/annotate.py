"""Text and symbols in the image: burned-in annotation and the lead side marker's letter.

Glyphs come from matplotlib's FreeType renderer (DejaVu Sans, shipped with matplotlib),
drawn straight to an array without a figure.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["glyphs"]


@lru_cache(maxsize=4)
def _font_path(bold: bool) -> str:
    from matplotlib import font_manager

    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans",
                                                             weight="bold" if bold else "normal"))


@lru_cache(maxsize=256)
def _glyphs(text: str, size_pt: float, bold: bool) -> np.ndarray:
    from matplotlib import ft2font

    font = ft2font.FT2Font(_font_path(bold))
    font.set_size(size_pt, 72)
    font.set_text(text, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    image = np.asarray(font.get_image(), dtype=np.float32) / 255.0
    image.flags.writeable = False
    return image


def glyphs(text: str, height_px: float, bold: bool = False) -> np.ndarray:
    """Anti-aliased bitmap (h, w) in [0, 1] of ``text`` with capitals ``height_px`` tall."""
    return _glyphs(text, round(max(height_px / 0.73, 4.0), 2), bold)
