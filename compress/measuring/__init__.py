"""Measuring: the harness (model in, row out), timing, counting, runtimes, load, significance, environment."""
