"""Entry point of the ``rrcunet`` console script.

Sub-commands are discovered from :data:`COMMAND_MODULES`; a module that is not present yet (a
pipeline stage still being built) is skipped, so the CLI always starts. User errors
(:class:`rrcunet.errors.RRcUNetError`) and file-system errors on a named path (an output folder
that cannot be written, a file in the way) are printed as one line, without a traceback (``-v``
shows it), and give exit status 2; Ctrl-C, even during start-up, gives 130.
"""

from __future__ import annotations

import os

# Before torch is imported (the sub-command modules import it): OpenMP threads that spin while
# waiting cost 2-8x on a shared or oversubscribed CPU box (measured, docs/architecture.md), and
# transparent huge pages for PyTorch's CPU allocator save ~30% of page-fault time on 3D volumes.
# Users can override either by setting the variable themselves.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

# glibc malloc settings of the CLI process (rrcunet.heap: at most 2 arenas, a fixed 16 MiB mmap
# threshold, and heap reuse during network passes); RRCUNET_MALLOPT=0 leaves glibc's defaults.
from rrcunet import heap  # noqa: E402  (standard library only: before torch)

heap.configure()

import argparse  # noqa: E402
import difflib  # noqa: E402
import importlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from rrcunet import __version__  # noqa: E402
from rrcunet.errors import RRcUNetError  # noqa: E402

# Help order follows the pipeline: data → model → training → inference → evaluation.
COMMAND_MODULES: tuple[str, ...] = (
    "rrcunet.cli.cmd_demo",
    "rrcunet.cli.cmd_phantoms",
    "rrcunet.cli.cmd_insert",
    "rrcunet.cli.cmd_convert",
    "rrcunet.cli.cmd_import",
    "rrcunet.cli.cmd_lungmask",
    "rrcunet.cli.cmd_models",
    "rrcunet.cli.cmd_train",
    "rrcunet.cli.cmd_predict",
    "rrcunet.cli.cmd_evaluate",
    "rrcunet.cli.cmd_view",
    "rrcunet.cli.cmd_cohort",
    "rrcunet.cli.cmd_compare",
    "rrcunet.cli.cmd_export",
    "rrcunet.cli.cmd_experiment",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrcunet",
        description="RRc-UNet 3D lung-tumour segmentation for chest CT.",
    )
    parser.add_argument("--version", action="version", version=f"rrcunet {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the command itself is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()  # imports the command modules (torch among them): a Ctrl-C may land here
    except KeyboardInterrupt:
        print("rrcunet: interrupted", file=sys.stderr)
        return 130
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in commands:
        close = difflib.get_close_matches(first, list(commands), n=1, cutoff=0.6)
        hint = f"; did you mean `rrcunet {close[0]}`?" if close else f"; commands: {', '.join(commands)}"
        print(f"rrcunet: error: unknown command {first!r}{hint}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except RRcUNetError as exc:
        print(f"rrcunet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None or args.verbose:
            raise
        # a folder that cannot be created or written (read-only, a file in the way, a missing drive)
        # lazy: rrcunet.io loads numpy and the readers; only this error path needs it
        from rrcunet.io.atomic import is_temporary

        where = Path(exc.filename)
        if is_temporary(where.name):  # an atomic write's temporary file: name its folder
            where = where.parent
        print(f"rrcunet {args.command}: error: cannot use {where}: {exc.strerror or exc}; choose a path you "
              "can write to for -o (a folder, not under a file), or check the input path", file=sys.stderr)
        return 2
    except RecursionError:
        # an input nested past Python's recursion limit (a JSON nested 200,000 deep, thousands of nested
        # folders): the input's shape, not a bug in the command; -v shows the traceback
        if args.verbose:
            raise
        print(f"rrcunet {args.command}: error: an input is nested too deeply to read (a JSON document or a folder "
              "tree thousands of levels deep); check the files you named, or run with -v to see where",
              file=sys.stderr)
        return 2
    except MemoryError:
        if args.verbose:
            raise
        print(f"rrcunet {args.command}: error: not enough memory for this input; use a smaller scan or grid "
              "(predict: --target-spacing with coarser values, or --sliding-window), or a machine with more memory",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rrcunet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
