"""Pages for people, rendered from plain values: a run's report, runs compared, a model card."""
