"""I/O: read and write CT volumes and contours behind one contract, :class:`Volume`.

Owns file formats (NIfTI, NRRD, MHA, DICOM series, RTSTRUCT, DICOM-SEG), their validation, and
atomic output writing. Nothing here changes voxel values beyond what the format defines (e.g.
DICOM rescale slope/intercept). The reader/writer contract, the DICOM series-choice rule and the
list of refused inputs are documented in docs/io.md.
"""

from rrcunet.io.atomic import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    check_output_path,
    remove_stale_temporaries,
)
from rrcunet.io.convert import convert, safe_filename
from rrcunet.io.dicom_series import (
    DicomSeriesInfo,
    SeriesSummary,
    list_dicom_series,
    load_series_datasets,
    read_dicom_series,
    write_ct_series,
)
from rrcunet.io.image import read_image, write_volume
from rrcunet.io.rtstruct import list_rois, read_rtstruct, write_rtstruct
from rrcunet.io.seg import list_segments, read_seg, read_seg_segments, write_seg
from rrcunet.io.validation import (
    DEFAULT_MAX_VOXELS,
    DEFAULT_SPACING_RANGE,
    check_ct_intensity,
    check_same_grid,
    validate_label,
)
from rrcunet.io.volume import Geometry, Volume

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "DEFAULT_SPACING_RANGE",
    "DicomSeriesInfo",
    "Geometry",
    "SeriesSummary",
    "Volume",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_stale_temporaries",
    "check_ct_intensity",
    "check_output_path",
    "check_same_grid",
    "convert",
    "list_dicom_series",
    "list_rois",
    "list_segments",
    "load_series_datasets",
    "read_dicom_series",
    "read_image",
    "read_rtstruct",
    "read_seg",
    "read_seg_segments",
    "safe_filename",
    "validate_label",
    "write_ct_series",
    "write_rtstruct",
    "write_seg",
    "write_volume",
]
