"""Wire dialects: one module per family of clients, each a sans-I/O translator over the same session."""
