"""Atomic, non-destructive output files.

Outputs are written to a temporary file in the destination folder and renamed into place, so a
crash never leaves a half-written file under the final name. :func:`check_output_path` refuses to
overwrite an input, and refuses an existing output unless ``overwrite`` is set. :func:`json_safe`
turns a result document into strict JSON values before it is written.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
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
    if out_p.is_dir():  # even --overwrite never replaces a folder with a file
        raise InputError(f"output {out_p} is a folder, where a file must be written; rename or remove that folder, "
                         "or choose another -o")
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
    # the stem is cut so that a long final name (up to 255 bytes) still leaves room for the temporary's own parts
    fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(final_p.name.split(".")[0][:100]), suffix=".part" + suffix,
                                    dir=final_p.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        _chmod_like_new_file(tmp)
        os.replace(tmp, final_p)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        reason = out_of_space(exc)
        if reason is not None:
            raise no_room_error(final_p, reason) from None
        raise


#: errno values that mean "no room": no space left, file too large (ulimit -f), disk quota exceeded.
_NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\] ([^\n]+)")


def no_room_error(path: str | os.PathLike[str], reason: str) -> InputError:
    """The one-line error of a write that found no room (:func:`out_of_space`), naming the file and the fix."""
    return InputError(f"{path}: could not be written ({reason}); the disk is probably full or a file-size limit was "
                      "hit. Free space (or choose another -o) and run the command again")


def out_of_space(exc: BaseException) -> str | None:
    """The reason text when ``exc`` is a write that found no room (also when a library re-raised it with
    its own text around it, as pydicom does: ``With tag (...) got exception: [Errno 27] File too large``
    followed by a traceback); ``None`` for anything else."""
    if not isinstance(exc, OSError):
        return None
    if exc.errno in _NO_ROOM:
        return exc.strerror or os.strerror(exc.errno)
    match = _ERRNO_TEXT.search(str(exc))
    if match and int(match.group(1)) in _NO_ROOM:
        return match.group(2).strip()
    return None


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


#: ``.<name>.rrcunet-<pid>-<random>.part<suffix>``: a temporary of :func:`atomic_path`, by the process <pid>.
_TEMPORARY = re.compile(r"^\..*\.rrcunet-(\d+)-[A-Za-z0-9_]+\.part")


def temporary_prefix(stem: str) -> str:
    """The start of every temporary file name rrcunet writes: it names rrcunet and the writing process,
    so :func:`remove_stale_temporaries` can tell its own leftovers from a user's files and from the
    temporaries of another run that is still writing."""
    return f".{stem}.rrcunet-{os.getpid()}-"


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary of :func:`atomic_path` (named by :func:`temporary_prefix`)."""
    return _TEMPORARY.match(name) is not None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries that :func:`atomic_path` left in ``folder`` when a run was killed
    mid-write; return what was removed. Only files named by :func:`temporary_prefix` whose writing
    process is gone are touched: a user's ``.notes.part2`` and a live run's temporaries stay."""
    removed = []
    folder_p = Path(folder)
    if folder_p.is_dir():
        for p in folder_p.iterdir():
            match = _TEMPORARY.match(p.name)
            if match and p.is_file() and not _alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], command: str) -> Iterator[Path]:
    """Hold ``FOLDER/.rrcunet-<command>.lock`` (holding this process's id) while a command writes there.

    A second run of the same command into the same folder is refused while the first one's process
    is alive (two runs writing one case's outputs at once would interleave them); a lock whose
    process is gone (a killed run) is taken over. The lock file is removed on exit.

    Raises:
        InputError: another live process holds the lock (the message names it and the fix).
    """
    path = Path(folder) / f".rrcunet-{command}.lock"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text(encoding="ascii").split()[0])
            except (OSError, ValueError, IndexError, UnicodeDecodeError):
                pid = None
            if pid is not None and _alive(pid):
                raise InputError(f"{folder}: another `rrcunet {command}` (process {pid}) is writing into this folder; "
                                 "wait for it to finish, or choose another -o folder") from None
            with contextlib.suppress(OSError):  # a killed run's lock: ours to remove
                path.unlink()
            continue
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:
        raise InputError(f"{folder}: could not take {path.name}; another `rrcunet {command}` keeps starting there. "
                         "Choose another -o folder")
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


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
