"""Experiments: the baseline, one compressor run (the pipeline), plans of many runs, search, sensitivity scans."""
