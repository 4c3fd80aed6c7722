"""The HTTP service: app factory, routes, health."""
