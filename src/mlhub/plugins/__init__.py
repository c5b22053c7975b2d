"""The plugin protocol and the built-in example plugins (torch and lightning imported lazily)."""
