"""`thinkswitch-plan`: can this run fit my card, with which settings, in how many hours, for how many dollars?

    thinkswitch-plan experiment=paper_aime --cards 3070,h100
    thinkswitch-plan experiment=paper_aime --memory 7.78GB --bandwidth 448GB/s --usd-per-hour 0.15
    thinkswitch-plan experiment=paper_aime --cards h100 --calibrate gpu_check.jsonl

Takes the overrides a run takes and composes the config as `thinkswitch` would (`cli.compose`: no run starts,
nothing is written), then plans it per card before anything loads: the shape from the checkpoint's config.json
(the paper's hub ids: the copy in `sizing.shapes.KNOWN_CONFIGS`), memory by the run's own plans and jobs
(`sizing.run_plan.jobs_for`, `sizing.memory`, `sizing.distill_memory`) and by each engine's own rules (`slots`:
transformers' paged-cache sizing for `cb`, vLLM's KV pool and context), time by `sizing.timing`, whose assumptions
are printed with the numbers. Where the run as configured does not fit a card, the plan names the overrides that
make it fit and plans the run with them. Prints Markdown. Estimates, not measurements; no weights load (torch and
transformers are imported for `cb`'s cache sizing only).

The package: `fit` (one card, one config: the memory plans and the hours per stage; the overrides that make a
run fit), `slots` (how many sequences each engine holds at once on a card, or why none fits), `render` (the
Markdown), `cli` (the console script). The arithmetic is in `thinkswitch.sizing` (cards, timing, memory plans) and
`thinkswitch.engines.paged_cache`; this is the top layer because it composes the config as a run does.
"""
