"""Text-guided frame sampler (VISA's TFS): answer parsing (``parsing``), the ``"vlm"`` sampler backend
(``sampler``), the Qwen2-VL / Qwen2.5-VL answer generator (``qwen``) and tiny random test checkpoints (``tiny``)."""
