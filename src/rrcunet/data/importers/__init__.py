"""``rrcunet import``: bring a public dataset into the canonical prepared layout of :mod:`rrcunet.data`.

Owns the registry of source kinds (:data:`IMPORT_KINDS`, which the CLI reads too) and
:func:`import_dataset` / :func:`import_dataset_report`, the library entry points. Each source kind
has its own module (:mod:`~rrcunet.data.importers.decathlon` for ``msd`` and ``nnunet``,
:mod:`~rrcunet.data.importers.tcia` for ``nsclc``) that finds the cases and reads one case; the
label composition, crash-safe writing, resume and manifest are shared
(:mod:`~rrcunet.data.importers.base`). docs/datasets.md describes each source tree, the commands
and the label mapping.

Output (``DATASET_DIR``)::

    manifest.json          # cases, provenance, seeded patient-level train/val split (+ test list)
    images/<case>.nii.gz   # CT in HU, on the source grid
    labels/<case>.nii.gz   # 0 background, 1 lung, 2 tumour
    lungs/<case>.nii.gz    # 0/1 lung region (lung ∪ tumour touching it)
    import_report.json     # imported / reused / skipped (with reasons) / ignored items
    .import/               # import options and per-case completion records (resume)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rrcunet.data.importers.base import (
    GROUND_TRUTH,
    Discovery,
    ImportOptions,
    ImportReport,
    SkippedCase,
    as_tuple,
    check_out_dir_outside_src,
    compose_labels,
    normalise_label_map,
    read_test_list,
    run_import,
)
from rrcunet.data.importers.decathlon import discover_msd, discover_nnunet, map_label_name
from rrcunet.data.importers.tcia import DEFAULT_LUNG_ROIS, DEFAULT_TUMOUR_ROI, discover_nsclc
from rrcunet.data.manifest import DatasetManifest
from rrcunet.errors import ConfigError, InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImportKind:
    """One source kind: its name, a one-line description (CLI help), how it finds the cases of a
    source folder given the import's options, and the options it accepts."""

    name: str
    description: str
    discover: Callable[[Path, ImportOptions], Discovery]
    accepts_rois: bool = False
    accepts_label_map: bool = False


#: The source kinds, in the order the CLI lists them.
IMPORT_KINDS: dict[str, ImportKind] = {
    "msd": ImportKind("msd", "Medical Segmentation Decathlon Task06_Lung (label 1 = tumour; lung from the extractor)",
                      lambda src, o: discover_msd(src)),
    "nnunet": ImportKind("nnunet", "nnU-Net raw dataset, v2 or v1 (labels mapped by name; --label-map)",
                         lambda src, o: discover_nnunet(src, None if o.label_map is None else dict(o.label_map)),
                         accepts_label_map=True),
    "nsclc": ImportKind("nsclc", "TCIA DICOM tree: NSCLC-Radiomics / -Interobserver1, CT + RTSTRUCT or SEG (--roi)",
                        lambda src, o: discover_nsclc(src, rois=o.rois, lung_rois=o.lung_rois), accepts_rois=True),
}


def import_dataset_report(
    kind: str,
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_list: str | os.PathLike[str] | Sequence[str] | None = None,
    lung_method: str = "classical",
    rois: Sequence[str] | str | None = None,
    lung_rois: Sequence[str] | str | None = None,
    label_map: Mapping[str, int] | Iterable[str] | None = None,
    overwrite: bool = False,
) -> ImportReport:
    """Like :func:`import_dataset`, but return the full :class:`ImportReport` (imported, reused,
    skipped cases with their reasons, ignored items) — what the CLI needs for its summary and exit code.
    """
    if kind not in IMPORT_KINDS:
        raise ConfigError(f"unknown import kind {kind!r}; expected one of {', '.join(IMPORT_KINDS)}")
    spec = IMPORT_KINDS[kind]
    src_p = Path(src)
    if not src_p.is_dir():
        raise InputError(f"{src_p}: no such folder; expected the {kind} source folder ({spec.description})")
    out_p = Path(out_dir)
    check_out_dir_outside_src(src_p, out_p)
    rois_t = as_tuple(rois)
    lung_rois_t = as_tuple(lung_rois)
    label_map_t = normalise_label_map(label_map)
    if rois_t is not None and not spec.accepts_rois:
        raise ConfigError(f"--roi applies to the nsclc (DICOM) import only, not to {kind!r}")
    if lung_rois_t is not None and not spec.accepts_rois:
        raise ConfigError(f"--lung-roi applies to the nsclc (DICOM) import only, not to {kind!r}")
    if label_map_t is not None and not spec.accepts_label_map:
        raise ConfigError(f"--label-map applies to the nnunet import only, not to {kind!r} (its labels are fixed)")
    if rois_t is not None and not rois_t:
        raise ConfigError("--roi: give at least one ROI name or pattern")
    if not isinstance(lung_method, str) or not lung_method:
        raise ConfigError(f"lung_method must be a method name such as 'classical', not {lung_method!r}")
    # lazy: rrcunet.lungmask imports torch (~1 s); `import rrcunet.data.importers` stays light
    from rrcunet.lungmask import check_method

    check_method(lung_method)  # unknown method, or one needing a model: refused before any case is read
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), not {val_fraction}")
    test_name = "test list"
    if test_list is None:
        test: tuple[str, ...] = ()
    elif isinstance(test_list, (str, os.PathLike)):
        test = read_test_list(test_list)
        test_name = str(test_list)
    else:
        test = tuple(str(t) for t in test_list)

    src_abs = src_p.resolve()
    options = ImportOptions(kind=kind, src=str(src_abs), seed=int(seed), val_fraction=float(val_fraction),
                            test=test, lung_method=lung_method, rois=rois_t, lung_rois=lung_rois_t,
                            label_map=label_map_t)
    return run_import(spec.discover(src_abs, options), out_p, options=options, overwrite=overwrite,
                      test_list_name=test_name)


def import_dataset(
    kind: str,
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_list: str | os.PathLike[str] | Sequence[str] | None = None,
    lung_method: str = "classical",
    rois: Sequence[str] | str | None = None,
    lung_rois: Sequence[str] | str | None = None,
    label_map: Mapping[str, int] | Iterable[str] | None = None,
    overwrite: bool = False,
) -> DatasetManifest:
    """Import a source dataset into the canonical prepared layout; return its manifest.

    Args:
        kind: ``"msd"`` (MSD Task06_Lung), ``"nnunet"`` (nnU-Net raw dataset) or ``"nsclc"`` (TCIA
            DICOM tree with RTSTRUCT/SEG) — see :data:`IMPORT_KINDS`.
        src: the source folder; it is only read, never written.
        out_dir: DATASET_DIR, created; may not be inside ``src``.
        seed: seed of the patient-level train/validation shuffle.
        val_fraction: fraction of the (non-test) patients in validation, in [0, 1).
        test_list: a text file (one case or patient id a line, ``#`` comments) or a sequence of ids to
            hold out as the test split; a listed case brings every scan of its patient.
        lung_method: the lung extractor's method for sources without a lung annotation
            (:func:`rrcunet.lungmask.extract_lungs`); recorded as each case's ``lung_source``.
        rois: ``nsclc`` only: tumour ROI names / fnmatch patterns (union of all matches). Default: the
            ROI ``GTV-1``, else the single ``GTV-1*`` ROI.
        lung_rois: ``nsclc`` only: lung ROI names / patterns. Default :data:`DEFAULT_LUNG_ROIS`.
        label_map: ``nnunet`` only: ``{label name: 0|1|2}`` or ``["name=value", ...]`` for labels the
            naming rule cannot map, or to override it.
        overwrite: redo an existing import made with other options, or write into a non-empty folder.

    Returns:
        The :class:`~rrcunet.data.manifest.DatasetManifest` saved as ``out_dir/manifest.json``. Cases that
        failed are left out and listed in ``out_dir/import_report.json`` (use
        :func:`import_dataset_report` to get them as objects).

    Raises:
        InputError: unreadable or malformed source (dataset.json paths escaping SRC, unmapped labels,
            no case found), output folder inside SRC or holding another import, unknown test ids, or
            no case could be imported.
        ConfigError: invalid option, or an option the kind does not accept.

    Example::

        manifest = import_dataset("msd", "Task06_Lung", "prepared/msd", seed=0)
        manifest = import_dataset("nsclc", "NSCLC-Radiomics", "prepared/lung1", rois=["GTV-1"])
    """
    return import_dataset_report(kind, src, out_dir, seed=seed, val_fraction=val_fraction, test_list=test_list,
                                 lung_method=lung_method, rois=rois, lung_rois=lung_rois, label_map=label_map,
                                 overwrite=overwrite).manifest


__all__ = [
    "DEFAULT_LUNG_ROIS",
    "DEFAULT_TUMOUR_ROI",
    "GROUND_TRUTH",
    "IMPORT_KINDS",
    "ImportKind",
    "ImportReport",
    "SkippedCase",
    "compose_labels",
    "import_dataset",
    "import_dataset_report",
    "map_label_name",
]
