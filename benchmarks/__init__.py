"""Benchmarks of explorler-optim: scripts that are re-run, and their committed results.

Run each from the repository root as a module, e.g. ``python -m benchmarks.sweep --protocol small``:

- ``sweep``: runs a protocol's grid (env x algorithm x variant x seed), resumable, locally or on Ray;
- ``protocols``: the named protocols and variants;
- ``report``: tables, IQM with bootstrap intervals, paired per-seed ratios and plots of a sweep;
- ``compare_runs``: checks a re-run sweep against a committed one, run by run;
- ``selection_truth``: oracle and realised gains of ExploRLer's selection (the ``selection`` protocol);
- ``sb3_runner``: stable-baselines3 PPO / sb3-contrib TRPO (optionally with ``ExploRLerCallback``) as a
  run: the ``sb3`` variants, e.g. this project's baselines against SB3's (``results/small-sb3``);
- ``bench_*``: speed: ``bench_ppo_sps`` (training, against CleanRL), ``bench_evaluation`` (candidate
  evaluation, racing), ``bench_explore_overhead`` (``explore()`` outside ``evaluate``);
- ``common``: provenance, package versions, atomic result files, the single-file scripts as modules,
  TensorBoard scalars, the machine-speed probe.

Results live in ``benchmarks/results/<name>/`` beside the command, versions, machine and date that
made them.
"""
