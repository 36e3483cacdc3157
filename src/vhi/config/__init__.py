"""The workflow configuration and the session sheet: schemas, validation, loading."""
