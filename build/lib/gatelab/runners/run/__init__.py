"""One training run: the recipe, its identity, the loop, the measurements, checkpoints and
the MLflow run it writes."""
