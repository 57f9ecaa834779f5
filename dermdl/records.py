"""The manifest record: one prepared image, as every stage after preprocess sees it.

A record is born in a task's ``prepare_item`` (``dermdl/tasks/<name>/data.py``), numbered by
:class:`dermdl.arrays.ImageRows` and stored in ``prepared/manifest.json``; :func:`dermdl.manifest.load_manifest`
adds where its pixels are (``dataset``, ``arrays``) and :func:`dermdl.pipeline.attach_groups` its lesion/patient
id (``group``). Those two functions are the only places that change a record after it is written;
everything else reads records or makes changed copies (``{**record, "target": ...}``: pseudo-labels).

Every key is declared here once, with who writes it and who reads it, so that a new key is a visible
decision (``tests/test_records.py`` fails on a key ``prepare_item`` writes that is not declared here).
A task that needs a new key adds it below. Records stay plain JSON-able dicts (``pixels`` aside, which
never reaches the manifest); :class:`Record` only types them.

``dermdl predict`` also hands ``write_predictions`` records of new images (``cli.py``) that carry
``source`` only, so ``write_predictions`` reads every other key with ``.get`` or ``in``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

if sys.version_info >= (3, 11):
    from typing import Required, TypedDict
else:  # requires-python is 3.10; Required arrived in typing in 3.11
    from typing_extensions import Required, TypedDict


class Record(TypedDict, total=False):
    """One prepared image (see the module docstring); keys without ``Required`` may be absent."""

    # --- every task: written by prepare_item -------------------------------------------------------
    # A unique name of the prepared image (classification, detection: the source path relative to
    # data.root; segmentation: <dataset>/images/<name>, a name, not a file). Read by
    # checkpoint.fingerprint (a resumed or cross-validation run trains on the same images).
    path: Required[str]
    # The source image relative to data.root. Read by pipeline.attach_groups (groups.csv lookup), every
    # task's write_predictions (output names, CSV/COCO image entries) and arrays.image_of (fallback).
    source: Required[str]
    # What the model learns (None: an image without a label). Classification: the class name (read by
    # batches.Labels, the class weights in classification.losses, write_predictions' true label);
    # segmentation: the prepared mask, relative to the prepared folder (read by
    # segmentation.data.prepared_classes -> targets.npy); detection: the objects in prepared pixels,
    # [{"bbox": [x0, y0, x1, y1], "category", "iscrowd", "segmentation"}] (read by batches.Boxes).
    # Pseudo-label copies replace it (classification, detection).
    target: Required[Any]
    # What splits stratify by: the class name (classification), None (segmentation: random split);
    # detection writes none. Read by splits (stratified_split, folds) and train (train.oversample).
    # Pseudo-label copies replace it (classification).
    stratum: str | None
    # The source image's size in pixels. Read by segmentation's write_predictions (masks are written at
    # the original resolution).
    width: int
    height: int
    # The prepared uint8 image (size, size, 3): only between prepare_item and preprocess, which moves it
    # into the dataset's images.npy (arrays.ImageRows.add); never in the manifest. Key: arrays.PIXELS.
    pixels: np.ndarray

    # --- added by the core --------------------------------------------------------------------------
    # The record's index in its dataset's images.npy (and targets.npy). Written by arrays.ImageRows.add
    # (preprocess); read by arrays.ArrayStore (training batches, PreparedImages), arrays.image_of,
    # batches.Masks; manifest.load_manifest refuses manifests without it (prepared by an older dermdl).
    row: int
    # The dataset the record belongs to. Written by manifest.load_manifest (not stored in the manifest,
    # whose records are grouped by dataset); for people and scripts reading records, dermdl reads it nowhere.
    dataset: str
    # The folder of the dataset's images.npy/targets.npy. Written by manifest.load_manifest (and on
    # preprocess's copies in arrays.write_targets); read by arrays.ArrayStore, arrays.prepared_root,
    # arrays.image_of, batches.Masks.
    arrays: str
    # The lesion/patient id from data.groups or <root>/groups.csv (None: not listed). Written by
    # pipeline.attach_groups (train: sl_train only); read by splits (groups never straddle a split or a
    # fold) and cross_validation (the report's "grouped").
    group: str | None

    # --- patches (preprocess.patch_size) -------------------------------------------------------------
    # {"source": the whole image relative to data.root, "row", "col", "height", "width": the patch's window
    # in its pixels}; ``path``/``source`` then name the patch (<stem>__r0512_c1024). Written by
    # patches.prepare_patch; read by pipeline.attach_groups and splits (one image's patches, one group).
    patch: dict[str, Any]

    # --- segmentation -------------------------------------------------------------------------------
    # The mask at its original resolution, relative to the prepared folder. Written by segmentation's
    # prepare_item; read by its write_predictions (full-resolution metrics; absent: no truth).
    mask_full: str
    # The source mask relative to data.root. Written by segmentation's prepare_item; read by its
    # write_predictions (names the file in mask value errors).
    mask_source: str
    # [x0, y0, x1, y1]: where the image lies in the prepared square (pad leaves borders, class 0).
    # Written by segmentation's prepare_item; read by segmentation.data.prepared_classes.
    content_box: list[int]
    # Where a pseudo-label copy's class-id map is: the folder of its targets.npy and its row there.
    # Written by segmentation's pseudo_label (copies); read by batches.Masks instead of arrays/row.
    target_arrays: str
    target_row: int

    # --- detection ----------------------------------------------------------------------------------
    # The source image's absolute path. Written by detection's prepare_item; read by its
    # write_predictions (overlays, the gallery's image path).
    source_abspath: str
    # The source COCO image entry ({"id", "file_name", "width", "height", ...}). Written by detection's
    # prepare_item; read by its write_predictions (<name>_gt.json).
    image: dict[str, Any]
    # The source COCO annotations, in original pixels. Written by detection's prepare_item; read by its
    # write_predictions (<name>_gt.json, what analyze scores against).
    annotations: list[dict[str, Any]]
    # The COCO category id of each class, in class order. Written by detection's prepare_item; read by
    # detection.data.dataloaders (the model's id buffer).
    category_ids: list[int]
    # dataclasses.asdict of the prepare.Geometry that mapped the image into the prepared square. Written
    # by detection's prepare_item; read by detection.data.record_geometry (boxes back to original pixels).
    geometry: dict[str, Any]
    # How many annotations the resize policy cut out of the image (crop). Written by detection's
    # prepare_item; for people reading the manifest, dermdl reads it nowhere.
    dropped: int
