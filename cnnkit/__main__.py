"""``python -m cnnkit`` runs the command-line interface."""

from cnnkit.cli.app import main

main()
