"""Benchmarks (run by `make bench`, not by the tests); see bench/README.md."""
