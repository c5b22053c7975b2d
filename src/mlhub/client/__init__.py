"""The Python SDK and the Lightning logger for user scripts."""
