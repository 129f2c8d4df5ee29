"""``rrcunet models``: list the registered models, or print their parameter counts.

A thin layer over :mod:`rrcunet.models`: the names come from ``MODEL_REGISTRY`` (the same registry
configs use) and the counts from :func:`rrcunet.models.summary.parameter_table`.

Examples::

    rrcunet models                          # names, classes and one-line summaries
    rrcunet models --params                 # parameter table at the paper's 32 base filters
    rrcunet models --params --base 16 --markdown
"""

from __future__ import annotations

import argparse

from rrcunet.errors import ConfigError
from rrcunet.formatting import table


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list the registered models or print their parameter counts",
        description="List the registered models (the names accepted by configs and --model options), "
        "or with --params print the parameter count of every variant, including both readings of "
        "the paper's ambiguities.",
    )
    parser.add_argument("--params", action="store_true", help="print the parameter table")
    parser.add_argument(
        "--base", type=int, default=32, metavar="N", help="level-0 filters for the table (default: 32, the paper's)"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: keeps `rrcunet --help` fast
    from rrcunet.models import MODEL_REGISTRY
    from rrcunet.models.summary import format_parameter_table, parameter_table

    if args.base < 1:
        raise ConfigError(f"--base {args.base} is invalid: expected a positive number of filters, e.g. 32")
    if args.params:
        print(format_parameter_table(parameter_table(base_filters=args.base), markdown=args.markdown), end="")
        return 0
    rows = [(s.name, s.cls.__name__, s.summary) for s in MODEL_REGISTRY.values()]
    if args.markdown:
        print(table([{"name": n, "class": c, "description": d} for n, c, d in rows]), end="")
    else:  # no header: one model a line
        w0, w1 = (max(len(r[i]) for r in rows) for i in (0, 1))
        print("\n".join(f"{n:<{w0}}  {c:<{w1}}  {d}" for n, c, d in rows))
    return 0
