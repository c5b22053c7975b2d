"""Content-addressed artifact store: local files by default, S3-compatible for scale. Imports nothing of mlhub."""
