"""The database layer: engine and connections for the three modes, schema, unit of work."""
