"""Programs the benchmarks time in a process of their own (`python -m benchmarks.programs.<name> ARGS`, from the
repository root); each prints one JSON line last."""
