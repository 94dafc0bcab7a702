"""`python -m thinkswitch.plan ...`: the same as `thinkswitch-plan ...`."""

from thinkswitch.plan.cli import main

main()
