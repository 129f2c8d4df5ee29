"""Optional clean-up of a predicted label map: tumour components outside the lung region or
below a volume threshold (:func:`postprocess_labels`, configured by
:class:`~rrcunet.inference.config.PostprocessConfig`).

Runs on the original CT grid, after the inverse preprocessing, so thresholds are in true mL.
Every removed component is reported (reason, size, centroid) in the prediction's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rrcunet.errors import InputError
from rrcunet.inference.config import PostprocessConfig
from rrcunet.inference.measure import Components, component_centroids, tumour_components
from rrcunet.io.volume import Volume

TUMOUR = 2
LUNG = 1


@dataclass(frozen=True)
class RemovedComponent:
    """A tumour component dropped by :func:`postprocess_labels`."""

    reason: str  # "outside_lung" or "below_min_volume"
    n_voxels: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]
    #: its number among the tumour components postprocessing examined (1-based, scan order), so the
    #: caller can drop it from those (:meth:`~rrcunet.inference.measure.Components.without`); 0: unknown
    component: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "n_voxels": self.n_voxels, "volume_ml": self.volume_ml,
                "centroid_mm_lps": list(self.centroid_mm)}


def postprocess_labels(labels: Volume, lung: Volume | None, config: PostprocessConfig,
                       *, components: Components | None = None) -> tuple[Volume, list[RemovedComponent]]:
    """Drop tumour components that lie wholly outside the lung region or are smaller than a volume.

    Args:
        labels: predicted 0/1/2 label map.
        lung: the lung region (0/1) on the same grid — the lung channel the network was given.
            Needed unless ``config.keep_outside_lung``.
        config: which rules apply. A component is removed as ``"outside_lung"`` when none of its
            voxels is in the lung region, else as ``"below_min_volume"`` when its volume is below
            ``config.min_tumour_ml`` (``None``, a model's choice not yet resolved, keeps all here:
            the :class:`~rrcunet.inference.Predictor` resolves it from the model file).
        components: precomputed :func:`~rrcunet.inference.measure.tumour_components` of the tumour.

    Returns:
        ``(labels, removed)``: a new Volume (the input is not modified) where removed tumour voxels
        are lung (1) inside the lung region and background (0) outside it, and the list of removed
        components.

    Example::

        cleaned, removed = postprocess_labels(pred, lung, PostprocessConfig(min_tumour_ml=0.5))
    """
    if config.is_noop:
        return labels, []
    arr = np.asarray(labels.array)
    if lung is not None and not lung.geometry.same_grid(labels.geometry):
        raise InputError(f"lung region ({lung.geometry.describe()}) is not on the prediction's grid "
                         f"({labels.geometry.describe()})")
    if lung is None and not config.keep_outside_lung:
        raise InputError("postprocessing needs the lung region to drop tumour outside the lung; pass it, or "
                         "--keep-outside-lung (keep_outside_lung=True in Python)")
    comps = components if components is not None else tumour_components(arr == TUMOUR)
    if comps.count == 0:
        return labels, []
    box = comps.box
    sub_labels = comps.labels
    ids = np.arange(1, comps.count + 1)
    drop = np.zeros(comps.count + 1, dtype=bool)
    reasons: dict[int, str] = {}
    lung_box = None if lung is None else np.asarray(lung.array)[box] != 0
    if not config.keep_outside_lung and lung_box is not None:
        inside = np.bincount(sub_labels[lung_box], minlength=comps.count + 1)[1:]
        for c in ids[inside == 0]:
            drop[c] = True
            reasons[int(c)] = "outside_lung"
    if config.min_tumour_ml:
        voxel_ml = labels.geometry.voxel_volume_ml
        for c in ids[comps.sizes * voxel_ml < config.min_tumour_ml]:
            if not drop[c]:
                drop[c] = True
                reasons[int(c)] = "below_min_volume"
    if not drop.any():
        return labels, []
    removed_mask = drop[sub_labels]
    dropped = ids[drop[1:]]
    voxel_ml = labels.geometry.voxel_volume_ml
    centres_mm = labels.geometry.index_to_physical(component_centroids(comps, dropped)).reshape(-1, 3)
    removed = [RemovedComponent(reasons[c], int(comps.sizes[c - 1]), float(comps.sizes[c - 1]) * voxel_ml,
                                tuple(float(v) for v in mm), component=c)  # type: ignore[arg-type]
               for c, mm in zip((int(c) for c in dropped), centres_mm)]
    out = arr.copy()
    sub = out[box]
    # removed tumour becomes lung inside the lung region, background outside it (worked out on the
    # removed voxels only, not as a full-box int64 array)
    sub[removed_mask] = np.where(lung_box[removed_mask], LUNG, 0) if lung_box is not None else 0
    return labels.with_array(out), removed
