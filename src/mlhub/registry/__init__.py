"""Model registry commands (register, alias/promote) with optimistic concurrency."""
