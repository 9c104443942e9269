"""Small shared helpers: atomic writes, hashing, progress bars, config files, GGUF reading, malloc policy."""
