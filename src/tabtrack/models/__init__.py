"""Models: the families tabtrack trains (`families/`, one file each, declared by `spec.ModelSpec`), the pipeline
it builds around them (`pipeline`), the models users bring (`own`), and how logged models are loaded (`loading`)."""
