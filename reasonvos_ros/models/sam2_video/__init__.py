"""SAM 2.1 / EdgeTAM / SAM 3 tracker video models from stock transformers, streamed frame by frame.

``families``: which transformers classes serve which on-disk model, loading from the Hugging Face layout, and the
configurations (tiny ones for tests, full-size ones for GPU benchmarks and parameter counts).
``streaming``: one inference session fed one frame at a time with its per-frame state capped.
"""
