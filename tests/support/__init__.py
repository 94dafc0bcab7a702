"""What the tests share: paths, the composed config, session-made artifacts, the CLI runner (cli, zygote), the
tiny 2507 pair and the fault-injecting scripts (faulty_*: run as `python -m tests.support.faulty_<name>`)."""
