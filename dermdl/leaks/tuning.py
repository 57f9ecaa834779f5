"""Leak check: tuning constants (chosen on the demo data and HAM10000; see tests/test_leaks.py)."""

from __future__ import annotations

# --- tuning (chosen on the demo data and HAM10000; see tests/test_leaks.py) -------------------------
SIDE = 64  # grayscale thumbnail: about SIDE x SIDE pixels, aspect ratio kept
COLOUR_SIDE = 32  # colour thumbnail for the colour agreement test
COARSE = 16  # side of the squished thumbnail of the coarse alignment search
COARSE_TEMPLATE = 12  # side of the coarse templates slid over it (5 x 5 shifts)
SCALES = (0.87, 0.93, 1.0, 1.07, 1.15)  # test-image scales searched coarsely (crops up to ~10 % per side)
MARGIN = 0.12  # border of the test thumbnail left out of the fine template (room to shift)
BANDPASS = (0.7, 2.0)  # difference of Gaussians (sigmas in thumbnail pixels): the fine structure
DARK = 40  # grey level below which a pixel is dermoscope vignette/background
NEAR_NCC = 0.85  # minimum structural correlation of a near duplicate
NEAR_COLOUR = 3.5  # maximum mean absolute colour difference (0-255) of a near duplicate
SAME_COLOUR = 1.75  # ... or: colours agree this closely (then NEAR_NCC_SAME_COLOUR suffices, for
NEAR_NCC_SAME_COLOUR = 0.7  #     plain images whose only structure is a small lesion and JPEG noise)
COLOUR_BLUR = 1.2  # blur (colour-thumbnail pixels) before comparing colours
MIN_STRUCTURE = 0.5  # band-pass standard deviation (grey levels) below which an image is "flat"
MIN_OVERLAP = 0.25  # share of the aligned area that must be usable (not dark) to compare
CANDIDATES_PER_TEST = 10  # nearest training images per test image that are aligned
CANDIDATES_PER_TRAIN = 2  # nearest test images per training image that are aligned
CANDIDATES_PHASH = 3  # nearest training images by pHash per test image that are aligned
MIN_VARIANTS = 2  # flip/rotation variants aligned finely per pair: at least the 2 best coarse ones
VARIANT_SLACK = 0.04  # ... and every variant whose coarse score is this close to the best one
MAX_COLOUR_SHIFT = 10.0  # pairs whose central colours differ more (CIELAB delta E) are not aligned
HALF_MIN = 0.4  # pairs whose best half-size correlation is lower are rejected before refining

TRAIN_ROLES = ("wl_train", "sl_train")
TEST_ROLES = ("sl_tests",)
KINDS = ("exact", "near", "group")
