"""``python -m rrcunet`` is the same as the ``rrcunet`` console script (and works under torchrun)."""

from rrcunet.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
