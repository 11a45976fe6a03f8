"""`python -m service.cli`: the same as the `synctrack` command."""

from service.cli.main import main

main()
