"""`python -m identify`: the same command line as `identify` (torchrun starts modules this way)."""

from identify.cli import main

main()
