"""Use cases: the functions the CLI and the API call; each owns one unit of work."""
