"""Many runs: the sweep spec, the plan against the tracking store, Ray execution and the
Optuna learning-rate search."""
