"""What the tests share: paths, the composed config, session-made artifacts, the CLI runner (cli, zygote), the
tiny 2507 pair, the fault-injecting scripts (faulty_*: run as `python -m tests.support.faulty_<name>`), one builder
of a stage's inputs (stage_inputs, also used by the benchmarks), fake and real checkpoints as files (checkpoints),
ways to damage outputs (damage), the slow store tests' runs on copies of the reference run (reference) and what
tests read back from a run directory (runs)."""
