"""Command-line interface: a thin sub-command layer over the library functions.

Each sub-command lives in its own module in this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and
returning an exit status. :data:`rrcunet.cli.main.COMMAND_MODULES` lists them in help order.
"""
