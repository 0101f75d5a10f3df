"""Ahead-of-time compilation: compile a program for a machine you do not have, and read its memory.

    topology.py   compile-only devices of a TPU slice shape (libtpu), or this host's devices
    abstract.py   ShapeDtypeStruct stand-ins (with shardings) for parameters, optimiser state, batches
    compiled.py   lower + compile without running; per-device bytes from `compiled.memory_analysis()`, the
                  compiler's refusals, a resumable cache of results
    estimate.py   the analytic per-device breakdown (parameters, optimiser, gradients, activations, KV cache)
    fits.py       `check_fits`: fail before a job starts, naming what to change
    sampler.py    the sampler's prefill + decode program, compiled for a mesh
    table.py      peaks, verdicts and the markdown page of a memory plan (tools/memory_plan.py)

Nothing here allocates device memory for the model: a 72B plan runs on a laptop.
"""
