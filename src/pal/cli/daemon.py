"""(being written) ``pal daemon``."""
