"""Job consumption, plugin loading, Lightning runs, metric and artifact publication (torch imported lazily)."""
