"""Training runs, in three rooms: ``data`` (corpus, tokenizer, token cache, batches), ``run``
(one training run) and ``sweep`` (many runs on Ray). Nothing here prints a table: the command
line (``gatelab.cli``) formats what these return."""
