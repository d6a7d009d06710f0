"""Benchmarks runnable from the CLI (``vigil bench ...``): staged pipelines that save each stage.

- :mod:`vigil.bench.robustness`: recall under evasive edits and false matches, per matcher tier.
- :mod:`vigil.bench.edits`: the edit families and strengths it applies.
"""
