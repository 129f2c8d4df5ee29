"""Atomic, non-destructive output files.

Outputs are written to a temporary file in the destination folder and renamed into place, so a
crash never leaves a half-written file under the final name. :func:`check_output_path` refuses to
overwrite an input, and refuses an existing output unless ``overwrite`` is set. :func:`json_safe`
turns a result document into strict JSON values before it is written.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rrcunet.errors import InputError


def check_output_path(out: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str]] = (),
                      overwrite: bool = False) -> Path:
    """Validate that ``out`` may be written; return it as a Path."""
    out_p = Path(out)
    resolved = out_p.resolve()
    for inp in inputs:
        if Path(inp).resolve() == resolved:
            raise InputError(f"output {out_p} is the same file as an input; choose another output path")
    if out_p.exists() and not overwrite:
        raise InputError(f"output {out_p} already exists; pass --overwrite to replace it")
    return out_p


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success rename it onto ``final``.

    The temporary name keeps the final suffix (``.nii.gz`` etc.) so format-sniffing writers work.
    On any exception the temporary file is removed and ``final`` is left untouched.
    """
    final_p = Path(final)
    final_p.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(final_p.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_p.name.split('.')[0]}.", suffix=".part" + suffix,
                                    dir=final_p.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _chmod_like_new_file(tmp)
        os.replace(tmp, final_p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _chmod_like_new_file(path: Path) -> None:
    """Give ``path`` the permissions a plain ``open(..., "w")`` would (mkstemp creates 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~umask)


def atomic_write_bytes(final: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def atomic_write_text(final: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(final, text.encode("utf-8"))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the ``.*.part*`` temporaries that :func:`atomic_path` left in ``folder`` when a run was
    killed mid-write (never a final file); return what was removed. Used when a run restarts."""
    removed = []
    folder_p = Path(folder)
    if folder_p.is_dir():
        for p in folder_p.glob(".*.part*"):
            if p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


def json_safe(value: Any) -> Any:
    """``value`` with strict-JSON values only: NaN and ±inf become ``None``, NumPy scalars Python
    numbers, paths strings, tuples lists and dictionary keys strings (recursively)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
