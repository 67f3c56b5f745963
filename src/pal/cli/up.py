"""(being written) ``pal up``: server, computer and daemon in one command."""
