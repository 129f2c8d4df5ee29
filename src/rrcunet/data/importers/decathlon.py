"""Importers for NIfTI datasets described by a ``dataset.json``: the Medical Segmentation Decathlon
(``msd``, Task06_Lung) and nnU-Net raw datasets (``nnunet``, v2 and v1 layouts).

Owns the reading of ``dataset.json`` (case lists, label names, channel names, file ending), the
mapping of a source's label values onto the project convention (0 background, 1 lung, 2 tumour),
and the per-case loader: CT and label read with :func:`rrcunet.io.read_image`, the label checked for
undeclared values (:func:`rrcunet.io.validate_label`) and for sharing the CT's grid
(:func:`rrcunet.io.check_same_grid`).

Label mapping:

* ``msd``: MSD Task06_Lung declares ``{"0": "background", "1": "cancer"}``: value 1 is the tumour and
  becomes 2; the lung comes from the lung extractor. A dataset.json declaring other labels is
  refused (it is another task: import it as ``nnunet`` with ``--label-map``).
* ``nnunet``: by label *name*. Value 0 and the name ``background`` → 0; a name containing
  tumour/tumor/GTV/lesion/nodule/cancer/neoplasm → 2; lung/lungs/parenchyma → 1 (tumour words
  win: "lung_nodule" is a nodule; a name joining both with and/+/&/with, e.g. "lung_and_tumour",
  is ambiguous). ``label_map`` ({name: value}) decides names the rule cannot, or overrides it.
  Unmapped or ambiguous names are refused with the list of names found; region-based labels
  (a list of values) are refused.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet.data.importers.base import Discovery, LoadedCase, SourceCase, resolve_inside
from rrcunet.errors import ConfigError, InputError
from rrcunet.io.convert import safe_filename
from rrcunet.io.image import ITK_SUFFIXES, read_image
from rrcunet.io.validation import check_same_grid, validate_label

logger = logging.getLogger(__name__)

TUMOUR_TERMS: tuple[str, ...] = ("tumour", "tumor", "gtv", "lesion", "nodule", "cancer", "neoplasm")
LUNG_TERMS: tuple[str, ...] = ("lung", "parenchyma")
_CONJUNCTIONS = re.compile(r"(?:^|[^a-z])(and|with|plus)(?:[^a-z]|$)|[+&]")
#: Suffixes of label/image files accepted for nnU-Net datasets (what :func:`read_image` reads).
NNUNET_FILE_ENDINGS: tuple[str, ...] = ITK_SUFFIXES


# --------------------------------------------------------------------------------------------------
# dataset.json and label names
# --------------------------------------------------------------------------------------------------
def load_dataset_json(path: Path) -> dict[str, Any]:
    """Parse ``dataset.json``; a JSON object is required."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read dataset.json ({exc}); expected a JSON object") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def declared_labels(data: Mapping[str, Any], path: Path) -> dict[int, str]:
    """The ``labels`` of a dataset.json as ``{value: name}``, from either layout.

    nnU-Net v2 writes ``{"background": 0, "tumour": 1}``; v1 and MSD write ``{"0": "background", "1": "cancer"}``.

    Raises:
        InputError: no ``labels``, region-based labels (lists of values), non-integer values, or two
            names for one value.
    """
    labels = data.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError(f"{path}: no \"labels\" object; expected e.g. {{\"background\": 0, \"tumour\": 1}}")
    out: dict[int, str] = {}
    v1 = all(re.fullmatch(r"\d+", str(k)) for k in labels) and all(isinstance(v, str) for v in labels.values())
    for key, value in labels.items():
        name, val = (value, key) if v1 else (key, value)
        if isinstance(val, (list, tuple)):
            raise InputError(
                f"{path}: label {name!r} is region-based ({val}); expected one integer value per label. "
                "Region-based nnU-Net datasets are not supported: convert the labels to plain values first"
            )
        try:
            ival = int(val)
            if ival != float(val):
                raise ValueError
        except (TypeError, ValueError):
            raise InputError(f"{path}: label {name!r} has value {val!r}; expected an integer") from None
        if ival < 0:
            raise InputError(f"{path}: label {name!r} has the negative value {ival}; expected values ≥ 0")
        if ival in out:
            raise InputError(f"{path}: labels {out[ival]!r} and {name!r} share the value {ival}")
        out[ival] = str(name)
    return out


def _words(name: str) -> str:
    return name.lower().replace("_", " ").replace("-", " ")


def map_label_name(name: str) -> int | None:
    """Project value (0, 1, 2) of a label *name* by the naming rule, ``None`` when unknown or ambiguous.

    Example::

        map_label_name("GTV-1") == 2; map_label_name("Lungs") == 1; map_label_name("heart") is None
    """
    low = _words(name)
    if low.strip() in ("background", "bg", "unlabelled", "unlabeled"):
        return 0
    tumour = any(t in low for t in TUMOUR_TERMS)
    lung = any(t in low for t in LUNG_TERMS)
    if tumour and lung and _CONJUNCTIONS.search(low):
        return None  # "lung and tumour": one label covering both
    if tumour:
        return 2
    if lung:
        return 1
    return None


def build_value_map(labels: Mapping[int, str], label_map: Mapping[str, int] | None, path: Path) -> dict[int, int]:
    """Source value → project value for an nnU-Net dataset (see the module docstring for the rule).

    Raises:
        ConfigError: ``label_map`` names a label the dataset does not declare.
        InputError: labels the rule cannot map (listing every name found), or no tumour label.
    """
    overrides = {k.lower(): int(v) for k, v in (label_map or {}).items()}
    names_lower = {n.lower() for n in labels.values()}
    unknown = sorted(set(overrides) - names_lower)
    if unknown:
        raise ConfigError(
            f"--label-map names {unknown} that {path} does not declare; labels found: "
            + ", ".join(f"{n!r}={v}" for v, n in sorted(labels.items()))
        )
    out: dict[int, int] = {}
    bad = []
    for value, name in sorted(labels.items()):
        if name.lower() in overrides:
            out[value] = overrides[name.lower()]
        elif value == 0:
            out[value] = 0
        else:
            mapped = map_label_name(name)
            if mapped is None:
                bad.append(f"{name!r}={value}")
            else:
                out[value] = mapped
    found = ", ".join(f"{n!r}={v}" for v, n in sorted(labels.items()))
    if bad:
        raise InputError(
            f"{path}: cannot map label(s) {', '.join(bad)} onto 0 background / 1 lung / 2 tumour (names are matched "
            f"by: tumour {'/'.join(TUMOUR_TERMS)} → 2, lung {'/'.join(LUNG_TERMS)} → 1); labels found: {found}. "
            "Say what each means with --label-map NAME=VALUE (e.g. --label-map airway=0)"
        )
    if 2 not in out.values():
        raise InputError(
            f"{path}: no label maps to tumour (2); labels found: {found}. Name the tumour label with "
            "--label-map NAME=2"
        )
    return out


# --------------------------------------------------------------------------------------------------
# loading one case
# --------------------------------------------------------------------------------------------------
def _load_nifti_case(image_path: Path, label_path: Path, value_map: Mapping[int, int],
                     provenance: dict[str, Any]) -> LoadedCase:
    ct = read_image(image_path, kind="image")
    label = read_image(label_path, kind="label")
    check_same_grid(ct, label, image_path, label_path)
    label = validate_label(label, label_path, allowed=sorted(value_map))
    lut = np.zeros(max(value_map) + 1, dtype=np.uint8)
    for src_value, dst_value in value_map.items():
        lut[src_value] = dst_value
    mapped = lut[np.asarray(label.array)]
    has_lung_label = 1 in value_map.values()
    return LoadedCase(
        ct=ct,
        tumour=mapped == 2,
        lung=(mapped == 1) if has_lung_label else None,
        provenance=dict(provenance, label_values={str(k): v for k, v in sorted(value_map.items())}),
    )


def _case_from_paths(kind: str, src: Path, case_name: str, image: Path, label: Path,
                     value_map: Mapping[int, int], extra: Mapping[str, Any] | None = None) -> SourceCase:
    case_id = safe_filename(case_name)
    provenance: dict[str, Any] = {"dataset": kind, "source_root": str(src), "image": str(image), "label": str(label)}
    if extra:
        provenance.update(extra)
    return SourceCase(
        case_id=case_id, patient=case_id, files=(str(image), str(label)),
        load=lambda: _load_nifti_case(image, label, value_map, provenance),
    )


def _visible(p: Path) -> bool:
    """False for hidden files such as the macOS ``._lung_001.nii.gz`` forks shipped in the MSD tarballs."""
    return not p.name.startswith(".")


def _strip_ending(name: str, ending: str) -> str:
    return name[: -len(ending)] if name.lower().endswith(ending.lower()) else name


def _with_channel(path: Path, ending: str, channel: int) -> Path:
    """``imagesTr/lung_001.nii.gz`` → ``imagesTr/lung_001_0000.nii.gz`` (nnU-Net channel suffix)."""
    stem = _strip_ending(path.name, ending)
    return path.with_name(f"{stem}_{channel:04d}{ending}")


def _file_ending(name: str) -> str:
    low = name.lower()
    for suffix in NNUNET_FILE_ENDINGS:
        if low.endswith(suffix):
            return suffix
    return Path(name).suffix


# --------------------------------------------------------------------------------------------------
# MSD Task06_Lung
# --------------------------------------------------------------------------------------------------
MSD_VALUE_MAP: dict[int, int] = {0: 0, 1: 2}


def discover_msd(src: Path) -> Discovery:
    """Cases of an MSD Task06_Lung folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``).

    The ``training`` list of dataset.json is used when present (paths relative to SRC, refused when
    they leave it); without dataset.json, ``labelsTr/*.nii.gz`` are paired with ``imagesTr/`` by name.
    An image listed as ``lung_001.nii.gz`` is also found as ``lung_001_0000.nii.gz`` (nnU-Net-converted
    copies). ``imagesTs/`` has no labels: those images are left out (listed as ignored).
    """
    json_path = src / "dataset.json"
    pairs: list[tuple[str, Path, Path]] = []
    ignored: list[tuple[str, str]] = []
    if json_path.is_file():
        data = load_dataset_json(json_path)
        labels = declared_labels(data, json_path)
        if sorted(labels) != [0, 1] or map_label_name(labels[1]) != 2:
            raise InputError(
                f"{json_path}: declares labels {labels}; expected MSD Task06_Lung's {{0: 'background', 1: 'cancer'}} "
                "(label 1 = tumour). For another task, import it as `nnunet` and name the labels with --label-map"
            )
        training = data.get("training")
        if not isinstance(training, list) or not training:
            raise InputError(f"{json_path}: no \"training\" list; expected [{{\"image\": ..., \"label\": ...}}, ...]")
        for n, item in enumerate(training):
            if not isinstance(item, dict):
                raise InputError(f"{json_path}: training[{n}] is {item!r}; expected {{\"image\": ..., \"label\": ...}}")
            image = resolve_inside(src, item.get("image"), what=f"training[{n}].image", listed_in=json_path)
            label = resolve_inside(src, item.get("label"), what=f"training[{n}].label", listed_in=json_path)
            ending = _file_ending(label.name)
            if not image.exists() and _with_channel(image, ending, 0).exists():
                image = _with_channel(image, ending, 0)
            pairs.append((_strip_ending(label.name, ending), image, label))
        for n, item in enumerate(data.get("test") or []):
            rel = item.get("image") if isinstance(item, dict) else item
            path = resolve_inside(src, rel, what=f"test[{n}]", listed_in=json_path)
            ignored.append((str(path), "MSD test image without a label (imagesTs): not imported"))
    else:
        labels_dir = src / "labelsTr"
        if not labels_dir.is_dir():
            raise InputError(
                f"{src}: neither dataset.json nor labelsTr/ found; expected an MSD task folder such as Task06_Lung "
                "(dataset.json, imagesTr/, labelsTr/)"
            )
        for label in sorted(p for p in labels_dir.glob("*.nii.gz") if _visible(p)):
            name = _strip_ending(label.name, ".nii.gz")
            image = src / "imagesTr" / f"{name}.nii.gz"
            if not image.exists() and (src / "imagesTr" / f"{name}_0000.nii.gz").exists():
                image = src / "imagesTr" / f"{name}_0000.nii.gz"
            pairs.append((name, image, label))
        test_dir = src / "imagesTs"
        if test_dir.is_dir():
            for p in sorted(q for q in test_dir.glob("*.nii.gz") if _visible(q)):
                ignored.append((str(p), "MSD test image without a label (imagesTs): not imported"))
    if ignored:
        logger.info("%s: %d unlabelled test image(s) in imagesTs are not imported", src, len(ignored))
    cases = tuple(_case_from_paths("msd", src, name, image, label, MSD_VALUE_MAP) for name, image, label in pairs)
    return Discovery(cases=cases, ignored=tuple(ignored),
                     description=f"MSD Task06_Lung from {src} (MSD label 1 'cancer' → 2; lung from the extractor)")


# --------------------------------------------------------------------------------------------------
# nnU-Net raw datasets
# --------------------------------------------------------------------------------------------------
def _ct_channel(data: Mapping[str, Any], path: Path) -> int:
    channels = data.get("channel_names", data.get("modality"))
    if channels is None:
        return 0
    if not isinstance(channels, dict) or not channels:
        raise InputError(f"{path}: \"channel_names\" is {channels!r}; expected e.g. {{\"0\": \"CT\"}}")
    if len(channels) == 1:
        key, name = next(iter(channels.items()))
        if str(name).upper() != "CT":
            logger.warning("%s: the only channel is %r, not 'CT'; reading it as a CT in HU", path, name)
        return int(key)
    ct = [int(k) for k, v in channels.items() if str(v).upper() == "CT"]
    if len(ct) != 1:
        raise InputError(
            f"{path}: {len(channels)} channels {dict(channels)} and {len(ct)} named 'CT'; expected exactly one CT "
            "channel to import"
        )
    return ct[0]


def discover_nnunet(src: Path, label_map: Mapping[str, int] | None = None) -> Discovery:
    """Cases of an nnU-Net raw dataset folder (``DatasetXXX_Name/`` or v1 ``TaskXXX_Name/``).

    Case lists, in order of preference: v2's explicit ``"dataset"`` object
    (``{case: {"images": [...], "label": ...}}``), a v1 ``"training"`` list (image paths without the
    ``_0000`` channel suffix, which is added), else every ``labelsTr/<case><file_ending>`` with
    ``imagesTr/<case>_<channel:04d><file_ending>``. Only the CT channel is imported.
    """
    json_path = src / "dataset.json"
    if not json_path.is_file():
        raise InputError(
            f"{src}: no dataset.json; expected an nnU-Net raw dataset folder (dataset.json, imagesTr/, labelsTr/)"
        )
    data = load_dataset_json(json_path)
    labels = declared_labels(data, json_path)
    value_map = build_value_map(labels, label_map, json_path)
    channel = _ct_channel(data, json_path)
    ending = str(data.get("file_ending", ".nii.gz"))
    if ending.lower() not in NNUNET_FILE_ENDINGS:
        raise InputError(
            f"{json_path}: file_ending {ending!r} is not a 3D volume format rrcunet reads; expected one of "
            f"{', '.join(NNUNET_FILE_ENDINGS)}"
        )
    label_names = {str(v): labels[v] for v in sorted(labels)}
    extra = {"label_names": label_names, "channel": channel}
    pairs: list[tuple[str, Path, Path]] = []
    if isinstance(data.get("dataset"), dict):
        for case, item in data["dataset"].items():
            images = item.get("images") if isinstance(item, dict) else None
            if not isinstance(images, list) or len(images) <= channel:
                raise InputError(f"{json_path}: dataset[{case!r}] has no image for channel {channel}")
            image = resolve_inside(src, images[channel], what=f"dataset[{case!r}].images[{channel}]",
                                   listed_in=json_path)
            label = resolve_inside(src, item.get("label"), what=f"dataset[{case!r}].label", listed_in=json_path)
            pairs.append((str(case), image, label))
    elif isinstance(data.get("training"), list):
        for n, item in enumerate(data["training"]):
            if not isinstance(item, dict):
                raise InputError(f"{json_path}: training[{n}] is {item!r}; expected {{\"image\": ..., \"label\": ...}}")
            image = resolve_inside(src, item.get("image"), what=f"training[{n}].image", listed_in=json_path)
            label = resolve_inside(src, item.get("label"), what=f"training[{n}].label", listed_in=json_path)
            with_channel = _with_channel(image, _file_ending(image.name), channel)
            if with_channel.exists() or not image.exists():
                image = with_channel
            pairs.append((_strip_ending(label.name, _file_ending(label.name)), image, label))
    else:
        labels_dir = src / "labelsTr"
        if not labels_dir.is_dir():
            raise InputError(f"{src}: no labelsTr/ folder; expected labelsTr/<case>{ending} next to dataset.json")
        for label in sorted(p for p in labels_dir.iterdir() if _visible(p) and p.name.lower().endswith(ending.lower())):
            case = _strip_ending(label.name, ending)
            pairs.append((case, src / "imagesTr" / f"{case}_{channel:04d}{ending}", label))
    ignored: list[tuple[str, str]] = []
    test_dir = src / "imagesTs"
    if test_dir.is_dir():
        n_test = sum(1 for p in test_dir.iterdir() if _visible(p))
        if n_test:
            ignored.append((str(test_dir), f"{n_test} unlabelled test image file(s) (imagesTs): not imported"))
    mapping = ", ".join(f"{labels[v]!r} {v}→{t}" for v, t in sorted(value_map.items()))
    cases = tuple(_case_from_paths("nnunet", src, name, image, label, value_map, extra) for name, image, label in pairs)
    return Discovery(cases=cases, ignored=tuple(ignored),
                     description=f"nnU-Net dataset {data.get('name', src.name)} from {src} (labels: {mapping})")
