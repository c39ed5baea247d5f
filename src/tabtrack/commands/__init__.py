"""The commands users run around the core, one module each: compare, tune (and Ray in `cluster`), reproduce,
registry (register, promote, the champion gate), report and card pages, runs as data, the UI, the DVC scaffold and
the data stages (`dataprep`)."""
