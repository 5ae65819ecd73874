"""The `joulestream` command and the embedded runner."""
