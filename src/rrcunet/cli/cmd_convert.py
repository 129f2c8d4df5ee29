"""``rrcunet convert``: DICOM (or NRRD/MHA/NIfTI) CT + RTSTRUCT/SEG → ``ct.nii.gz`` + one mask per ROI.

A thin layer over :func:`rrcunet.io.convert`.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_ct_read_arguments(p: argparse.ArgumentParser, *, series_uid: bool = True) -> None:
    """The CT-reading options that the readers' error messages suggest; every command that reads a CT
    offers them (``ct_read_options`` turns them into :func:`rrcunet.io.read_image` keywords).
    ``series_uid=False`` for ``predict``, which reads every series of a folder as its own case."""
    if series_uid:
        p.add_argument("--series-uid", metavar="UID", help="SeriesInstanceUID to read when the folder holds several")
    p.add_argument("--allow-non-ct", action="store_true", help="accept a modality other than CT")
    p.add_argument("--allow-nonuniform", action="store_true",
                   help="resample missing/unevenly spaced slices onto the median step instead of refusing them")
    p.add_argument("--no-intensity-check", dest="check_intensity", action="store_false",
                   help="do not refuse images whose values do not look like Hounsfield units")


def ct_read_options(args: argparse.Namespace) -> dict[str, bool]:
    options = {"check_intensity": args.check_intensity, "allow_non_ct": args.allow_non_ct,
               "allow_nonuniform": args.allow_nonuniform}
    if getattr(args, "series_uid", None):
        options["series_uid"] = args.series_uid
    return options


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a CT (DICOM folder or volume file) and its RTSTRUCT/SEG to NIfTI",
        description=(
            "Write OUT_DIR/ct.nii.gz and one OUT_DIR/<roi>.nii.gz mask (0/1, on the CT grid) per selected "
            "ROI of an RTSTRUCT or segment of a DICOM SEG. When a folder holds several series, the CT series "
            "with the most slices is read (see docs/io.md); pass --series-uid to choose."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="DICOM series folder (or one of its files), or a .nii.gz/.nrrd/.mha")
    p.add_argument("-o", "--out", dest="out_dir", required=True, metavar="OUT_DIR", help="output folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--rtstruct", metavar="FILE", help="RTSTRUCT to rasterise onto the CT grid")
    src.add_argument("--seg", metavar="FILE", help="DICOM SEG to convert onto the CT grid")
    p.add_argument("--roi", action="append", metavar="NAME", dest="rois",
                   help="ROI/segment name or pattern such as 'GTV*' (case-insensitive); repeat for several; "
                        "default: all")
    add_ct_read_arguments(p)
    p.add_argument("--no-reference-check", dest="check_references", action="store_false",
                   help="rasterise an RTSTRUCT onto this CT even if it references another series or frame of "
                        "reference (when you registered them yourself)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.io.convert import convert

    written = convert(
        args.input,
        args.out_dir,
        rtstruct=args.rtstruct,
        seg=args.seg,
        rois=args.rois,
        overwrite=args.overwrite,
        check_references=args.check_references,
        **ct_read_options(args),
    )
    for name, path in written.items():
        print(f"{name}\t{path}")
    return 0
