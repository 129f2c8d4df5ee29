"""Training data: preprocessed cases cached on disk once, and the torch ``Dataset`` that reads them.

Owns the case cache and :class:`CachedCaseDataset`.

**Cache.** Reading a CT and running the §4.1 preprocessing (orient, clip, z-normalise, crop,
resize; :func:`rrcunet.preprocessing.preprocess`) takes seconds per scan, which every epoch would
otherwise repeat. :func:`build_cache` does it once per case and stores the network-grid arrays in
``CACHE_DIR/<key>/<case>.safetensors`` (written atomically), where ``<key>`` hashes the
preprocessing config, the input mode of the task and the cache format, so a config change never
reads stale arrays. Each file also records the size and modification time of its source files and
is rebuilt when they change. safetensors is used rather than ``.npz`` because it is read by
memory-mapping, with no pickle.

**Tasks.** ``"tumour"``: input = CT + lung channel (the dataset's ``lungs/`` mask, or the
lung extractor's when a case has none), cropped to the lungs; target = the 0/1/2 label map.
``"lung"``: input = the CT only, *not* cropped to the lungs (at inference the lung model has no
lung mask to crop with: the whole scan is resized to the target shape); target = the ``lungs/``
mask (0/1), or ``label > 0`` when a case has no lung mask.

**Samples.** :class:`CachedCaseDataset` yields ``{"ct": (1,X,Y,Z) float32, "lung": (1,X,Y,Z)
float32 (tumour task only), "label": (1,X,Y,Z) float32, "case_id": str}`` through an optional
transform (:mod:`rrcunet.data.augment`), which concatenates ``ct`` and ``lung`` into ``image``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from rrcunet.config import config_to_dict, config_to_json
from rrcunet.data.manifest import CaseEntry, DatasetManifest
from rrcunet.errors import InputError
from rrcunet.io.atomic import atomic_path, atomic_write_text
from rrcunet.io.image import read_image
from rrcunet.io.validation import validate_label
from rrcunet.lungmask import ClassicalLungExtractor
from rrcunet.preprocessing import PreprocessConfig, preprocess
from rrcunet.tasks import get_task

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
DEFAULT_CACHE_NAME = ".rrcunet_cache"


def cache_key(preprocess_config: PreprocessConfig, task: str, lung_channel: str = "dataset") -> str:
    """Short hash naming the cache folder of a preprocessing config and task input mode."""
    spec = get_task(task)
    extractor = spec.crop_to_lungs and lung_channel == "extractor"
    inputs = spec.input_description + (", lung from the extractor" if extractor else "")
    payload = json.dumps({"format": CACHE_FORMAT, "inputs": inputs,
                          "preprocess": config_to_dict(preprocess_config)}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def default_cache_dir(dataset_dir: str | Path) -> Path:
    return Path(dataset_dir) / DEFAULT_CACHE_NAME


@dataclass(frozen=True)
class CachedCase:
    """One cached case: its id and the ``.safetensors`` file holding ``image`` and ``label``."""

    case_id: str
    path: Path


def _source_stamp(paths: dict[str, Path]) -> dict[str, list[int]]:
    stamp = {}
    for what, p in paths.items():
        st = p.stat()
        stamp[what] = [int(st.st_size), int(st.st_mtime_ns)]
    return stamp


def _case_sources(root: Path, manifest: DatasetManifest, case: CaseEntry, task: str) -> dict[str, Path]:
    paths = {"image": manifest.resolve(root, case.image)}
    if case.label is not None:
        paths["label"] = manifest.resolve(root, case.label)
    if case.lung is not None:
        paths["lung"] = manifest.resolve(root, case.lung)
    if task == "tumour" and "label" not in paths:
        raise InputError(f"{root}: case {case.case_id} has no label map; training the tumour model needs "
                         "labels/<case>.nii.gz (0 background, 1 lung, 2 tumour)")
    if task == "lung" and "lung" not in paths and "label" not in paths:
        raise InputError(f"{root}: case {case.case_id} has neither a lung mask nor a label map to train "
                         "the lung model on")
    for what, p in paths.items():
        if not p.is_file():
            raise InputError(f"{root}: case {case.case_id} {what} file {p} does not exist "
                             "(the manifest names it; re-create the dataset or fix manifest.json)")
    return paths


def _is_fresh(path: Path, stamp: dict[str, list[int]]) -> bool:
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            keys = set(fh.keys())
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return False
    try:
        return json.loads(meta.get("sources", "null")) == stamp and {"image", "label"} <= keys
    except json.JSONDecodeError:
        return False


def preprocess_case(sources: dict[str, Path], *, preprocess_config: PreprocessConfig, task: str, lung_channel: str = "dataset"
                    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read and preprocess one case: ``(image (C,X,Y,Z) float32, target (X,Y,Z) uint8, record dict)``.

    ``lung_channel="extractor"`` ignores the dataset's lung mask for the tumour task's input: the
    lung region is computed by the classical extractor, as ``rrcunet predict`` does by default.
    A case without a lung mask gets the extractor's too.
    """
    spec = get_task(task)
    ct = read_image(sources["image"], kind="image")
    label = (validate_label(read_image(sources["label"], kind="label"), sources["label"])
             if "label" in sources else None)  # a label 7 is named with its file here, not deep in training
    lung = read_image(sources["lung"], kind="label") if "lung" in sources else None
    if spec.crop_to_lungs:
        if lung is None or lung_channel == "extractor":
            lung = ClassicalLungExtractor()(ct)
        case = preprocess(ct, lung, label=label, config=preprocess_config)
    else:
        # The lung model sees the whole scan (the task's lung input covers everything) and learns
        # the lung mask, or the label map's non-background when a case has none.
        source = lung if lung is not None else label
        target_vol = source.with_array((np.asarray(source.array) > 0).astype(np.uint8))  # type: ignore[union-attr]
        case = preprocess(ct, spec.lung_input(ct, None), label=target_vol, config=preprocess_config)
    image, target = case.image[: spec.in_channels], case.label
    if target is None:  # unreachable: a label is always passed
        raise InputError(f"{sources['image']}: preprocessing returned no target")
    return (np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(target, dtype=np.uint8),
            case.record.to_dict())


def build_cache(dataset_dir: str | Path, case_ids: Sequence[str], *, preprocess_config: PreprocessConfig, task: str,
                cache_dir: str | Path | None = None, progress: bool = False,
                lung_channel: str = "dataset") -> list[CachedCase]:
    """Preprocess the cases that are not cached yet (or whose sources changed); return all cached files.

    Args:
        dataset_dir: prepared dataset folder (with ``manifest.json``).
        case_ids: the cases to cache.
        preprocess_config: a :class:`~rrcunet.preprocessing.PreprocessConfig`.
        task: ``"tumour"`` or ``"lung"`` (decides input channels, crop and target; see the module doc).
        cache_dir: cache root; default ``<dataset_dir>/.rrcunet_cache``.
        progress: show a tqdm bar.
        lung_channel: ``"dataset"`` or ``"extractor"`` (see :func:`preprocess_case`).

    Returns:
        One :class:`CachedCase` per id, in the order given.
    """
    root = Path(dataset_dir)
    manifest = DatasetManifest.load(root)
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir(root)) / cache_key(preprocess_config, task, lung_channel)
    folder.mkdir(parents=True, exist_ok=True)

    config_file = folder / "preprocess.json"
    if not config_file.is_file():

        atomic_write_text(config_file, config_to_json(preprocess_config))
    out: list[CachedCase] = []
    todo: list[tuple[CaseEntry, dict[str, Path], dict[str, list[int]], Path]] = []
    for case_id in case_ids:
        case = manifest.case(case_id)
        sources = _case_sources(root, manifest, case, task)
        stamp = _source_stamp(sources)
        path = folder / f"{_safe_name(case_id)}.safetensors"
        out.append(CachedCase(case_id, path))
        if not _is_fresh(path, stamp):
            todo.append((case, sources, stamp, path))
    if todo:
        logger.info("preprocessing %d of %d cases into %s", len(todo), len(out), folder)
        for case, sources, stamp, path in tqdm(todo, desc="preprocess", disable=None if progress else True,
                                                       leave=False):
            image, target, record = preprocess_case(sources, preprocess_config=preprocess_config, task=task,
                                                    lung_channel=lung_channel)
            meta = {"case_id": case.case_id, "task": task, "sources": json.dumps(stamp),
                    "record": json.dumps(record), "format": str(CACHE_FORMAT)}
            with atomic_path(path) as tmp:
                save_file({"image": torch.from_numpy(image), "label": torch.from_numpy(target)}, str(tmp),
                          metadata=meta)
    return out


def _safe_name(case_id: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in case_id)
    if keep != case_id or keep.startswith("."):
        keep = f"{keep.lstrip('.')}-{hashlib.sha1(case_id.encode()).hexdigest()[:8]}"
    return keep


def read_cached(path: str | Path) -> dict[str, torch.Tensor]:
    """``{"image": (C,X,Y,Z) float32, "label": (X,Y,Z) uint8}`` of a cache file."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {"image": fh.get_tensor("image"), "label": fh.get_tensor("label")}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: unreadable cache file ({exc}); delete it and it will be rebuilt") from exc


class CachedCaseDataset(torch.utils.data.Dataset):
    """Cached preprocessed cases as dictionaries for MONAI dictionary transforms.

    Args:
        cases: the cached files (:func:`build_cache`).
        transform: applied to each sample (see :func:`rrcunet.data.augment.build_transform`); it
            holds the random state that :func:`monai.data.utils.worker_init_fn` seeds per worker.
        with_lung: the cached image has a lung channel (tumour task) to expose as ``"lung"``.
        target_class: class whose voxels ``"fg"`` marks (tumour 2, lung 1), for patch sampling.
        with_fg: also return ``"fg"`` = ``label == target_class`` (needed by the patch sampler).

    Example::

        ds = CachedCaseDataset(build_cache(root, ids, preprocess_config=cfg, task="tumour"))
        ds[0]["ct"].shape    # (1, 256, 256, 48)
    """

    def __init__(self, cases: Sequence[CachedCase], *, transform: Callable[[dict], Any] | None = None,
                 with_lung: bool = True, target_class: int = 2, with_fg: bool = False) -> None:
        self.cases = list(cases)
        self.transform = transform
        self.with_lung = with_lung
        self.target_class = target_class
        self.with_fg = with_fg

    def __len__(self) -> int:
        return len(self.cases)

    def load(self, index: int) -> dict[str, Any]:
        """The untransformed sample ``index``."""
        case = self.cases[index]
        arrays = read_cached(case.path)
        image, label = arrays["image"], arrays["label"]
        sample: dict[str, Any] = {"ct": image[:1].float(), "label": label[None].float(), "case_id": case.case_id}
        if self.with_lung:
            if image.shape[0] < 2:
                raise InputError(f"{case.path}: cached image has no lung channel; rebuild the cache")
            sample["lung"] = image[1:2].float()
        if self.with_fg:
            sample["fg"] = (label[None] == self.target_class).float()
        return sample

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.load(index)
        if self.transform is not None:
            sample = self.transform(sample)
            if isinstance(sample, list):  # a patch sampler returns a list of num_samples=1 dicts
                sample = sample[0]
        return sample
