"""Benchmarks (not tests): scripts that measure and write ``benchmarks/results/*.json`` and the
Markdown blocks generated from them. Run each as a module from the repository root, e.g.
``python -m benchmarks.table2``; ``benchmarks/README.md`` lists them."""
