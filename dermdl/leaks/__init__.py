"""Leak check: training images that reappear in a test set, exactly, nearly, or as the same lesion.

Why: a test image that is also (a copy of) a training image, or that shows the same lesion or patient
as a training image, inflates every reported metric. Real collections (HAM10000, ISIC, clinic exports)
contain all three kinds, so ``validate-layout`` refuses them unless ``data.allow_leaks: true``.

Three kinds of leak between any training dataset (``wl_train``, ``sl_train``) and any test dataset
(``sl_tests``), reported pair by pair:

``exact``
    identical file bytes (SHA-256).
``near``
    the same picture after resizing, recompression (JPEG), flips, 90-degree rotations or a small crop
    (5 % reliably, about 10 % per side usually). Why not a perceptual hash alone: dermoscopy images are
    alike (a round lesion on skin inside a dark dermoscope circle), so a 64-bit hash puts different
    lesions as close together as a cropped copy and its original. The check therefore uses the hash to
    find candidates and then proves a duplicate by aligning the two images. Deterministic steps:

    1. *Candidates.* Per image: a 64-bit DCT perceptual hash (pHash of a 32 x 32 grayscale downscale)
       of each of the 8 flips/rotations, colour statistics and a radial brightness profile of the
       central disc, and an 8 x 8 coarse brightness map. Each test image is paired with its nearest
       training images under these (``CANDIDATES_PER_TEST`` + ``CANDIDATES_PHASH``), each training
       image with its nearest test images (``CANDIDATES_PER_TRAIN``); all of them are flip/rotation
       invariant and change little under crops, so a copy ranks at or near the top.
    2. *Alignment.* The test image's 8 variants are correlated with the training image on 16 px
       thumbnails (all in one matrix product) to pick the promising flips/rotations; for those, the
       centre of the band-passed thumbnail is slid over the training image at 5 scales (0.87-1.15) at
       half size (pairs correlating below ``HALF_MIN`` stop here), then at full size (64 px, aspect
       kept) with the scale refined to ~0.5 % and the shift to sub-pixel precision.
    3. *Verdict.* At that alignment, away from dark dermoscope borders, the fine structure must
       correlate (``ncc >= NEAR_NCC``) AND the colours agree (mean absolute difference ``<= NEAR_COLOUR``
       of 255); or, for plain images whose only structure is a small lesion, the colours agree almost
       exactly (``<= SAME_COLOUR``) with ``ncc >= NEAR_NCC_SAME_COLOUR``. Different lesions that merely
       look alike fail one of the two; a resampled, recompressed, flipped or cropped copy passes both.
       Images without structure (a flat colour) are only compared exactly. ``distance`` = ``1 - ncc``.

    Tuning: on the demo data (480 images, seeds 0-2, 32-128 px) no distinct pair passes; on HAM10000
    split per image, the 18 passing pairs are 17 re-shoots of one lesion and one naevus filed under two
    lesion ids (ISIC_0029152 / ISIC_0033173).
``group``
    both images belong to the same group (lesion or patient id) according to a CSV mapping image ->
    group; ``dermdl import`` writes one (``groups.csv`` in each layout root).

Speed: ~1.5 ms of CPU per image for the fingerprints and ~0.8 ms per candidate pair, in worker
processes: 10,015 HAM10000 images (200 x 150; 8,013 training vs 2,002 test) take ~31 s of CPU,
about 20 s on 2 free cores.
"""

from __future__ import annotations

from dermdl.leaks.check import (
    Leak,
    LeakCheck,
    check_layout,
    check_params,
    default_workers,
    find_leaks,
    print_check,
    run_cli,
)
from dermdl.leaks.groups import VARIANT_NAMES, Groups, dataset_images, detect_task, image_folder
from dermdl.leaks.hashes import Fingerprint, fingerprint, fingerprints
from dermdl.leaks.tuning import (
    BANDPASS,
    CANDIDATES_PER_TEST,
    CANDIDATES_PER_TRAIN,
    CANDIDATES_PHASH,
    COARSE,
    COARSE_TEMPLATE,
    COLOUR_BLUR,
    COLOUR_SIDE,
    DARK,
    HALF_MIN,
    KINDS,
    MARGIN,
    MAX_COLOUR_SHIFT,
    MIN_OVERLAP,
    MIN_STRUCTURE,
    MIN_VARIANTS,
    NEAR_COLOUR,
    NEAR_NCC,
    NEAR_NCC_SAME_COLOUR,
    SAME_COLOUR,
    SCALES,
    SIDE,
    TEST_ROLES,
    TRAIN_ROLES,
    VARIANT_SLACK,
)
from dermdl.leaks.verify import Match, candidate_pairs, compare, near_duplicates
