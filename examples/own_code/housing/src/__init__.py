"""This project's own code: the features its models are built on."""
