"""The ``pal`` command line: server, console, db (daemon, cli and up come later)."""
