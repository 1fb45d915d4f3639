"""``python -m gateway`` runs the CLI, like the ``gateway`` console script."""

from gateway.cli import main

main()
