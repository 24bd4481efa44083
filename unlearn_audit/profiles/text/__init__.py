"""The text profiles: the generated sentiment corpus, IMDb, and GPT-2 classifiers (transformers, lazily)."""
