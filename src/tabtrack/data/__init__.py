"""Data: read a table (`load`, `remote` for object storage), check it (`validate`), settle features, target and
task and split them (`prepare`), identify the file (`fingerprint`); `checked` does it all in one call."""
