"""The daemon: connects one computer, claims deliveries, starts runs."""
