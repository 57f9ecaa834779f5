"""Lesion counting and affected area per mask (dermdl.tasks.segmentation.grading), against hand-counted masks."""

from __future__ import annotations

import numpy as np
import pytest

from dermdl.tasks.segmentation.grading import grade_mask


def _mask(*boxes: tuple[int, int, int, int], size: int = 20) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    for y0, x0, y1, x1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


CASES = [  # mask, min_area -> lesions, lesion pixels, largest
    (_mask(), 1, 0, 0, 0),
    (_mask((0, 0, 3, 3)), 1, 1, 9, 9),
    (_mask((0, 0, 3, 3), (10, 10, 14, 15)), 1, 2, 29, 20),
    (_mask((0, 0, 3, 3), (10, 10, 14, 15)), 10, 1, 20, 20),  # the 9-pixel speck is below min_area
    (_mask((0, 0, 3, 3), (10, 10, 14, 15)), 21, 0, 0, 0),
    (_mask((0, 0, 2, 2), (2, 2, 4, 4)), 1, 1, 8, 8),  # touching at a corner: one lesion (8-connected)
    (_mask((0, 0, 2, 2), (3, 3, 5, 5)), 1, 2, 8, 4),  # one pixel apart: two
    (_mask((0, 0, 20, 20)), 1, 1, 400, 400),
]


@pytest.mark.parametrize(("mask", "min_area", "lesions", "pixels", "largest"), CASES)
def test_grade_mask_counts_components(mask, min_area, lesions, pixels, largest):
    grade = grade_mask(mask, min_area)
    assert (grade.lesions, grade.lesion_pixels, grade.largest_lesion_pixels) == (lesions, pixels, largest)
    assert grade.affected_share == pytest.approx(pixels / mask.size)


def test_min_area_below_one_is_an_error():
    with pytest.raises(ValueError, match="--min-area"):
        grade_mask(_mask(), 0)
