"""Evaluation harness: simulated 2D segmenter and the paper's metrics.

TEST AND BENCHMARK CODE ONLY: nothing in the product imports this package at run time (the
simulated segmenter reads ground truth, which no backend may ever do).
"""
