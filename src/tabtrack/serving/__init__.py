"""Using a logged or registered model: batch predictions and the HTTP service."""
