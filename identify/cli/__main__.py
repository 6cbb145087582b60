"""`python -m identify.cli`: the command line."""

from identify.cli import main

main()
