"""``python -m vitlib``: the command line of chapter 6 (:mod:`vitlib.cli`)."""

from .cli import main

main()
