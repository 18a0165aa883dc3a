"""`python -m headwater.cli ...` runs the `headwater` command."""

from headwater.cli import main

main()
