"""The process's memory settings: glibc malloc's (the CLI process's defaults, and heap reuse during a
network pass) and Python's cyclic garbage collector's during a prediction.

Owns every ``mallopt`` call of the package and every change to the collector's thresholds (standard
library only, so the CLI can apply the settings before torch is imported). Elsewhere than glibc
(musl, macOS, Windows) the malloc settings are no-ops.

**Process defaults** (:func:`configure`, called by the ``rrcunet`` CLI at start-up): :data:`MALLOPT`,
at most 2 arenas, so the threads of a cohort run (``predict --workers``) do not each keep their
own freed memory, and a fixed 16 MiB mmap threshold, so glibc does not raise it after the first
large free and whole-CT arrays go back to the system when freed. On the 40-case cohort with
``--workers 2``: peak RSS 1447 → 1204 MiB, for about 5 % of throughput (docs/inference.md, "The
allocator"). A variable the user set (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``) is left
to glibc; ``RRCUNET_MALLOPT=0`` leaves all of glibc's defaults.

**Heap reuse during the network pass** (:func:`network_pass`): PyTorch's CPU tensors come straight
from malloc. Above the mmap threshold each one is a fresh ``mmap`` whose pages the kernel
zero-fills on first touch, and each free an ``munmap``. RRc-UNet 3D at the paper's size makes and
drops activations of 50–400 MB at every unit, so that page-fault work was about a third of its
forward pass (issue 23; ``python benchmarks/model_speed.py --heaps network-pass,cli``). The
``Predictor`` uses it for channels-last passes on the CPU only: the contiguous eager path's float32
activations fragmented the kept heap past 3 GB (channels-last float32 peaked at 2.4-2.7 GB). Inside the block, allocations up to 1 GiB come from the heap and freed
memory stays there for the next tensor (mmap and trim thresholds of :data:`NETWORK_PASS`); on exit
the process defaults come back and ``malloc_trim(0)`` returns the freed heap to the system. The
price is a higher peak (freed blocks are reused, not returned, so the heap fragments).

Inside the block the process also takes no transparent huge pages (``prctl(PR_SET_THP_DISABLE)``,
put back on exit), although the CLI keeps ``THP_MEM_ALLOC_ENABLE=1``, under which PyTorch asks for
huge pages for every tensor of 2 MB or more. A single pass, which is what ``rrcunet predict`` runs
per CT, touches its memory for the first time, and on this project's machines (virtual machines) a
first-touched 2 MB page cost far more than the 4 KiB pages the kernel recycles: RRc-UNet 3D's first
bf16 pass at the paper's size took 2.45 s with huge pages against 1.32 s without, float32
channels-last 7.03 s against 3.61 s (``python benchmarks/model_speed.py --variants rrcunet --dtypes
bf16,fp32 --layouts cl3d --heaps network-pass,network-pass-thp --first-pass``; docs/inference.md,
"Huge pages and the first pass"). Passes repeated back to back were faster with huge pages (0.87
against 1.05 s: the second finds the first one's pages warm); ``rrcunet predict`` runs one pass
per CT, seconds apart. ``network_pass(huge_pages=True)`` keeps them (the benchmark's
``network-pass-thp``).

``rrcunet predict`` (``predict_case``) runs the stages after the network (inverting,
postprocessing, measuring, writing) in a block of their own: their arrays of 10-140 MB (a
512×512×134 CT is 35 M voxels) then also reuse freed memory. Reading the CT and the lung region run
under :func:`no_huge_pages`: NumPy asks for huge pages for every array of 4 MB or more
(``madvise``), as PyTorch does under ``THP_MEM_ALLOC_ENABLE=1``, and on these machines their first
touch is slow (above); the preprocessing was not faster without them and keeps them. The
long-lived results of the stages before the network (the CT, the lung region, the network's input)
must not come from a kept heap: with those stages in a heap-reuse block too (commit d522474),
``python benchmarks/inference_speed.py --threads 2 --skip-model --slices --dtypes fp32-default``
gave LUNG1-001's DICOM row peaks of 3877 and 3913 MiB with the float32 network stage at 7.26 and
6.57 s in two runs of three (2711 MiB and 4.28 s in the third; about 3.8 s without the block), the
fragmentation the contiguous float32 pass showed. Of those stages only the classical lung
extractor takes a block (:func:`temporaries`, where ``predict_case`` allows it) for its working
arrays, with its result allocated before the block; a block around the preprocessing as well
brought the 3.7-3.9 GB peaks back (tried, not kept). Measured in docs/inference.md, "The whole
call". A cohort's overlapped stages (``--workers``) take no heap-reuse block outside the network
pass; their reading and lung region go without huge pages too.

It is active only where :func:`configure` set the mmap threshold (the CLI without ``RRCUNET_MALLOPT=0`` and
without the user's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``): glibc's adaptive
threshold cannot be restored once set, so a process that kept it is left alone.

There is no allocator library to configure this for us: PyTorch has no caching allocator for CPU
tensors, and ``mallopt`` is glibc's own interface.

**Fewer collections during a prediction** (:func:`fewer_collections`, around ``predict_paths``).
CPython runs its cyclic collector every 700 net container allocations and, every 100 of those, a
full collection that walks every tracked object of the process. A prediction process tracks about
370 000 objects once torch and the model are loaded and a case is done, 680 000 after a DICOM case
(the slices' parsed headers, kept for the SEG that references them), while reading those headers and
building the SEG allocate millions of small objects. ``python benchmarks/inference_speed.py
--threads 2 --skip-model --slices --dtypes default --json OUT`` on LUNG1-001 DICOM, before: 628
collections in the case, 0.61 s, finding 693 objects in all, since the pipeline's objects are freed
by reference counting (issue 23). Inside the block the thresholds are :data:`FEWER_COLLECTIONS`: a
young collection every 50 000 allocations (each still cheap), the middle one every 20 of those, a
full one every 100 of those; the same command: 8 collections, 0.05 s. Cyclic garbage is still
collected, later. Nests; the previous thresholds come back on exit. A process whose collector is
off (``gc.disable()`` or a threshold of 0) or collects less often already is left as it is.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
PR_SET_THP_DISABLE, PR_GET_THP_DISABLE = 41, 42
#: glibc's trim threshold while the mmap threshold is fixed (it no longer adapts then): 128 KiB.
GLIBC_TRIM_THRESHOLD = 128 * 1024

#: Process defaults applied by :func:`configure`: environment variable → (mallopt parameter, value).
MALLOPT: dict[str, tuple[int, int]] = {"MALLOC_ARENA_MAX": (M_ARENA_MAX, 2),
                                       "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, 16 << 20)}
#: Settings inside :func:`network_pass`: parameter → value (1 GiB: every activation of the paper's
#: network comes from the heap).
NETWORK_PASS: dict[int, int] = {M_MMAP_THRESHOLD: 1 << 30, M_TRIM_THRESHOLD: 1 << 30}
#: The user-set variables that turn :func:`network_pass` off.
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

#: The collector's thresholds inside :func:`fewer_collections` (CPython's defaults: 700, 10, 10).
FEWER_COLLECTIONS: tuple[int, int, int] = (50_000, 20, 100)

_restore: dict[int, int] | None = None  # what network_pass puts back; None: network_pass is off
_lock = threading.Lock()
_depth = 0
_thp_disabled_before = False  # whether the outermost network_pass turned huge pages off


def _libc() -> ctypes.CDLL | None:
    """The process's own symbols (libc among them): no library search, which would run ldconfig in a
    subprocess at every start of the CLI."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc has both; others: AttributeError
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def configure() -> None:
    """Apply :data:`MALLOPT` (see the module docstring); a no-op without glibc or with ``RRCUNET_MALLOPT=0``."""
    global _restore
    _restore = None
    if os.environ.get("RRCUNET_MALLOPT", "1") == "0":
        return
    libc = _libc()
    if libc is None:
        return
    for variable, (param, value) in MALLOPT.items():
        if variable not in os.environ:
            libc.mallopt(ctypes.c_int(param), ctypes.c_int(value))
    if not any(v in os.environ for v in USER_VARIABLES):
        _restore = {M_MMAP_THRESHOLD: MALLOPT["MALLOC_MMAP_THRESHOLD_"][1], M_TRIM_THRESHOLD: GLIBC_TRIM_THRESHOLD}


def active() -> bool:
    """Whether :func:`network_pass` changes anything in this process."""
    return _restore is not None


@contextmanager
def network_pass(*, huge_pages: bool = False) -> Iterator[None]:
    """Heap reuse for the block, without huge pages unless ``huge_pages`` (see the module docstring);
    nests (the outermost block's settings hold), and is a no-op unless :func:`active`."""
    global _depth, _thp_disabled_before
    restore = _restore
    libc = _libc() if restore is not None else None
    if libc is None or restore is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            for param, value in NETWORK_PASS.items():
                libc.mallopt(ctypes.c_int(param), ctypes.c_int(value))
            _thp_disabled_before = not huge_pages
            if _thp_disabled_before:
                _thp_off_enter(libc)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for param, value in restore.items():
                    libc.mallopt(ctypes.c_int(param), ctypes.c_int(value))
                if _thp_disabled_before:
                    _thp_off_exit(libc)
                libc.malloc_trim(ctypes.c_size_t(0))


def _thp_disabled(libc: ctypes.CDLL) -> bool | None:
    """The process's "no transparent huge pages" flag, or None where the system has no such flag
    (not Linux, a kernel before 3.15, or no ``prctl`` in this libc)."""
    try:
        value = libc.prctl(ctypes.c_int(PR_GET_THP_DISABLE), 0, 0, 0, 0)
    except AttributeError:
        return None
    return None if value < 0 else bool(value)


def _set_huge_pages_off(libc: ctypes.CDLL, off: bool) -> bool | None:
    """Set the process's "no transparent huge pages" flag; its previous value, or None where the
    system has no such flag (:func:`_thp_disabled`)."""
    before = _thp_disabled(libc)
    if before is None or libc.prctl(ctypes.c_int(PR_SET_THP_DISABLE), ctypes.c_ulong(int(off)), 0, 0, 0) != 0:
        return None
    return before


def huge_pages_off() -> bool | None:
    """Whether the process takes no transparent huge pages now (None where it cannot tell)."""
    libc = _libc()
    return None if libc is None else _thp_disabled(libc)


_gc_lock = threading.Lock()
_gc_depth = 0
_gc_before: tuple[int, ...] | None = None  # the thresholds fewer_collections puts back; None: left alone


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Python's cyclic collector at :data:`FEWER_COLLECTIONS` for the block (see the module
    docstring); nests (the outermost block sets and restores), thread-safe."""
    global _gc_depth, _gc_before
    with _gc_lock:
        _gc_depth += 1
        if _gc_depth == 1:
            before = gc.get_threshold()
            wanted = tuple(max(b, f) for b, f in zip(before, FEWER_COLLECTIONS))
            _gc_before = before if gc.isenabled() and before[0] > 0 and wanted != before else None
            if _gc_before is not None:
                gc.set_threshold(*wanted)
    try:
        yield
    finally:
        with _gc_lock:
            _gc_depth -= 1
            if _gc_depth == 0 and _gc_before is not None:
                gc.set_threshold(*_gc_before)
                _gc_before = None


_allowed = threading.local()


@contextmanager
def temporaries_allowed() -> Iterator[None]:
    """Let :func:`temporaries` blocks take effect in this thread for the block (``predict_case``'s
    stages before the network). Elsewhere (a cohort's overlapped preparing threads, ``rrcunet
    lungmask``) they are no-ops and glibc's settings hold, as before."""
    before = getattr(_allowed, "on", False)
    _allowed.on = True
    try:
        yield
    finally:
        _allowed.on = before


def temporaries() -> AbstractContextManager[None]:
    """:func:`network_pass` for a block of CPU work whose large arrays are temporaries, freed before
    it ends (see the module docstring: what lives on must be allocated before the block), inside
    :func:`temporaries_allowed` in this thread; a no-op elsewhere."""
    return network_pass() if getattr(_allowed, "on", False) else nullcontext()


# blocks without huge pages (network_pass and no_huge_pages, from any thread) share one count, so
# the flag is turned off by the first to enter and put back by the last to leave
_thp_depth = 0
_thp_before: bool | None = None


def _thp_off_enter(libc: ctypes.CDLL) -> None:  # under _lock
    global _thp_depth, _thp_before
    _thp_depth += 1
    if _thp_depth == 1:
        _thp_before = _set_huge_pages_off(libc, True)


def _thp_off_exit(libc: ctypes.CDLL) -> None:  # under _lock
    global _thp_depth, _thp_before
    _thp_depth -= 1
    if _thp_depth == 0 and _thp_before is not None:
        _set_huge_pages_off(libc, _thp_before)
        _thp_before = None


@contextmanager
def no_huge_pages() -> Iterator[None]:
    """No transparent huge pages for the block (the process's flag, put back on exit), glibc's heap
    settings unchanged (see the module docstring); nests, also with :func:`network_pass` and across
    threads (one count), and is a no-op unless :func:`active`."""
    libc = _libc() if _restore is not None else None
    if libc is None:
        yield
        return
    with _lock:
        _thp_off_enter(libc)
    try:
        yield
    finally:
        with _lock:
            _thp_off_exit(libc)
