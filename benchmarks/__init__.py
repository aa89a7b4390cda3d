"""Scripts that measure and print tables (not tests); run as ``python -m benchmarks.<name>``."""
