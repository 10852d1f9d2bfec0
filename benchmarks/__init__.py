"""Side-by-side benchmarks of sklearn_hypothesaes against the reference implementation."""
