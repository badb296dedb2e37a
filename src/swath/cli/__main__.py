"""``python -m swath.cli``: the ``swath`` command."""

from swath.cli import main

main()
