"""Training-time augmentation (§4.1) and sample assembly, as MONAI dictionary transforms.

Owns :func:`build_transform`. The paper applies "flipping, deformation, and affine
transformation" at random during training and names no parameters; we use MONAI's
``RandFlipd`` (each axis of ``flip_axes`` independently), ``RandAffined`` (rotation, scaling,
translation) and ``Rand3DElasticd`` (smooth random displacement field), with the probabilities and ranges of
:class:`rrcunet.training.config.AugmentConfig`; optionally (not in the paper) CT-only intensity
scaling, shifting and Gaussian noise (``RandScaleIntensityd``, ``RandShiftIntensityd``,
``RandGaussianNoised``).

One random draw per transform is applied to every spatial key of a sample, so the CT, the lung
channel and the label stay aligned voxel for voxel. The CT is interpolated linearly; the lung
channel and the label map with nearest neighbour, so they stay 0/1 and 0/1/2. Validation uses
the same function with ``train=False``: no random transform at all.

Optional patch sampling (``patch_size``, when the whole volume does not fit in memory) happens
first, with MONAI's ``RandCropByPosNegLabeld``: with probability ``patch_target_prob`` the patch
is centred on a voxel of the target class (tumour), otherwise on any other voxel. With
``patch_sampling="lesion"``, :class:`LesionIndicesd` hands that sampler candidate centres in which
every connected component of the target class has the same share, so a 1 mL nodule is the centre
of a patch as often as a 50 mL tumour (with ``"voxel"``, 50 times less often).

The transform ends by concatenating ``ct`` (+ ``lung``) into ``image`` (C,X,Y,Z) float32 and
turning ``label`` into an ``int64`` (1,X,Y,Z) map, both plain tensors (no MetaTensor).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    ConcatItemsd,
    CopyItemsd,
    DeleteItemsd,
    EnsureTyped,
    MapTransform,
    Rand3DElasticd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)
from scipy import ndimage


class FinishSampled(MapTransform):
    """Cast ``label`` to a rounded ``int64`` map and make ``image``/``label`` plain contiguous tensors."""

    def __init__(self) -> None:
        super().__init__(keys=("image", "label"))

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        image = d["image"]
        label = d["label"]
        if hasattr(image, "as_tensor"):
            image = image.as_tensor()
        if hasattr(label, "as_tensor"):
            label = label.as_tensor()
        d["image"] = image.float().contiguous()
        d["label"] = torch.round(label).long().contiguous()
        return d


class LesionIndicesd(MapTransform):
    """Candidate patch centres with one equal share per lesion, for ``RandCropByPosNegLabeld``.

    Reads the binary target map ``fg`` (1, X, Y, Z) and writes ``fg_indices``: for every connected
    component (26-connectivity), ``per_lesion`` flat voxel indices spread evenly through it (with
    repetition for smaller components), so a uniform draw picks a lesion uniformly, then a voxel
    in it; and ``bg_indices``: at most ``max_background`` evenly spread indices of the other voxels.
    Deterministic (no random draw of its own); MONAI's crop moves centres near the border inwards
    as usual, so lesions on the edge of the crop are sampled too.
    """

    def __init__(self, key: str = "fg", *, per_lesion: int = 512, max_background: int = 65536) -> None:
        super().__init__(keys=(key,))
        self.key = key
        self.per_lesion = int(per_lesion)
        self.max_background = int(max_background)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        d = dict(data)
        fg = d[self.key]
        fg = np.asarray(fg.detach().cpu() if hasattr(fg, "detach") else fg)[0] > 0.5
        labels, n = ndimage.label(fg, structure=np.ones((3, 3, 3), dtype=bool))
        flat = labels.ravel()
        fg_idx = []
        if n:
            order = np.argsort(flat, kind="stable")
            counts = np.bincount(flat, minlength=n + 1)
            starts = np.concatenate(([0], np.cumsum(counts)))
            for k in range(1, n + 1):
                members = order[starts[k]:starts[k + 1]]
                pick = np.linspace(0, len(members) - 1, self.per_lesion).round().astype(np.int64)
                fg_idx.append(members[pick])
        bg = np.flatnonzero(flat == 0)
        if len(bg) > self.max_background:
            bg = bg[np.linspace(0, len(bg) - 1, self.max_background).round().astype(np.int64)]
        d["fg_indices"] = np.concatenate(fg_idx) if fg_idx else np.zeros(0, dtype=np.int64)
        d["bg_indices"] = bg
        return d


def build_transform(augment: Any | None, *, train: bool, with_lung: bool,
                    patch_size: tuple[int, int, int] | None = None, patch_target_prob: float = 0.67,
                    patch_sampling: str = "voxel") -> Compose:
    """The sample transform: [patch] → [flips, affine, elastic, CT intensity] → ``image``/``label`` tensors.

    Args:
        augment: an :class:`~rrcunet.training.config.AugmentConfig` (``None`` or
            ``enabled=False`` = no augmentation).
        train: training (random patch + augmentation) or validation (neither).
        with_lung: samples have a ``lung`` key (the tumour task's second input channel).
        patch_size: crop training samples to this size (``None`` = whole volume).
        patch_target_prob: probability that a patch is centred on the target class (key ``fg``).
        patch_sampling: ``"voxel"`` (every target voxel alike) or ``"lesion"`` (every connected
            target component alike, :class:`LesionIndicesd`).

    Returns:
        A MONAI ``Compose``; seed it with ``set_random_state(seed)`` (done per epoch and per
        DataLoader worker by the trainer).

    Example::

        t = build_transform(AugmentConfig(), train=True, with_lung=True)
        out = t({"ct": ct, "lung": lung, "label": label})   # each (1, X, Y, Z)
        out["image"].shape, out["label"].dtype              # (2, X, Y, Z), torch.int64
    """
    spatial = ["ct", "lung", "label"] if with_lung else ["ct", "label"]
    # CT linear; masks nearest so they stay binary / integer.
    modes = ["bilinear"] + ["nearest"] * (len(spatial) - 1)
    padding = ["border"] + ["zeros"] * (len(spatial) - 1)
    transforms: list[Any] = []
    if train and patch_size is not None:
        p = float(patch_target_prob)
        transforms.append(SpatialPadd(keys=spatial + ["fg"], spatial_size=patch_size, mode="constant"))
        indices: dict[str, str] = {}
        if patch_sampling == "lesion":
            transforms.append(LesionIndicesd("fg"))
            indices = {"fg_indices_key": "fg_indices", "bg_indices_key": "bg_indices"}
        elif patch_sampling != "voxel":
            raise ValueError(f"patch_sampling must be 'voxel' or 'lesion', not {patch_sampling!r}")
        transforms.append(RandCropByPosNegLabeld(keys=spatial, label_key="fg", spatial_size=patch_size, pos=p,
                                                 neg=1.0 - p, num_samples=1, allow_smaller=False, **indices))
    if train and augment is not None and augment.enabled:
        a = augment
        transforms += [RandFlipd(keys=spatial, prob=a.flip_prob, spatial_axis=axis) for axis in a.flip_axes]
        if a.affine_prob > 0:
            transforms.append(RandAffined(
                keys=spatial, prob=a.affine_prob,
                rotate_range=[math.radians(d) for d in a.rotate_deg],
                scale_range=list(a.scale), translate_range=list(a.translate),
                mode=modes, padding_mode=padding,
            ))
        if a.elastic_prob > 0:
            transforms.append(Rand3DElasticd(
                keys=spatial, prob=a.elastic_prob, sigma_range=tuple(a.elastic_sigma),
                magnitude_range=tuple(a.elastic_magnitude), mode=modes, padding_mode=padding,
            ))
        if a.intensity_prob > 0:  # the CT only: the lung channel and the label stay 0/1 and 0/1/2
            transforms += [
                RandScaleIntensityd(keys="ct", factors=a.intensity_scale, prob=a.intensity_prob),
                RandShiftIntensityd(keys="ct", offsets=a.intensity_shift, prob=a.intensity_prob),
                RandGaussianNoised(keys="ct", prob=a.intensity_prob, std=a.noise_std),
            ]
    if with_lung:
        transforms += [ConcatItemsd(keys=["ct", "lung"], name="image", dim=0), DeleteItemsd(keys=["ct", "lung"])]
    else:
        transforms += [CopyItemsd(keys="ct", names="image"), DeleteItemsd(keys=["ct"])]
    if train and patch_size is not None:
        transforms.append(DeleteItemsd(keys=["fg", "fg_indices", "bg_indices"] if patch_sampling == "lesion"
                                       else ["fg"]))
    transforms += [EnsureTyped(keys=["image", "label"], track_meta=False), FinishSampled()]
    return Compose(transforms)
