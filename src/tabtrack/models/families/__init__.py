"""One module per model family; each exposes `SPECS`, a tuple of ModelSpec."""
