"""Sizing: memory, time and price arithmetic, made before any model loads.

What a checkpoint's shape (`shapes`) and tensors (`weights`) cost in memory, for generation (`memory`) and for
distillation (`distill_memory`); the card table (`cards`) and the
time model (`timing`); the run's generation jobs and its memory plan at start (`run_plan`). Used by `setup`
(checked before a run spends anything), the distill stage (where to merge the adapter) and `thinkswitch-plan`.
"""
