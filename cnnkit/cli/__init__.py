"""The ``cnnkit`` command line: one thin module per subcommand, registered in ``app.py``."""
