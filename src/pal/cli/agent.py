"""(being written) ``pal cli``: agent and human commands through the daemon's local API."""
