"""``pizzeria bench``: what the order saga costs on top of the bare engine, in one run.

The benchmark starts its own in-memory dev server and worker process(es) on 127.0.0.1
(free ports, never 7233), with the order's timer and the driver search at zero, and runs
four cases on the same worker:

* ``baseline-good``: the bare engine, five no-op activities (`pizzeria.ops.baseline`);
* ``good``: the good order through the saga and the ledger;
* ``baseline-bad``: two no-ops, one non-retryable failure, two no-op compensations;
* ``bad``: the bad-card order, compensations included.

Each baseline is measured next to its saga, in batches ordered baseline, saga, saga,
baseline, so that noise on this shared machine and the dev server slowing down as it fills
hit both alike; a fresh server and worker serve each pair, so no server holds more than a
few thousand workflows. Per case and concurrency it reports workflows per second, p50 and
p99 latency (start to result), and CPU milliseconds per workflow of the server and of the
worker, read from ``/proc/<pid>/stat``: on a noisy machine CPU per workflow holds when
throughput wobbles. The ratios to the baseline are the figures that matter.

The worker is a separate process (``python -m pizzeria.ops.bench.worker``) built with
`pizzeria.worker.build_worker`, the same wiring as ``pizzeria worker``; the baseline
workflow is added to it with a plugin, so both share one worker, its pollers and its slots.

The modules, by job: `cases` (what is measured), `stack` (the server and workers),
`sampling` (CPU and memory from /proc), `batches` (running workflows), `measure` (a run),
`figures` (statistics and ratios), `report` (tables and plot), `worker` (what the worker
process serves). The command itself is `pizzeria.cli.bench`.
"""
