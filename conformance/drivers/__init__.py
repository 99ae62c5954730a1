"""Built-in drivers. Each imports its implementation only when its factory is called."""
