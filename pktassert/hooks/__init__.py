"""Where a filter hooks, as tables: each hook's sections, actions and verdict numbers."""
