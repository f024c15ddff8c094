"""Data of a run: the corpus, the tokenizer, the token cache and the batches drawn from it."""
