"""VISA's text-guided frame sampler (TFS) as a ``FrameSampler`` backend (registry name ``"vlm"``).

The sampler shows a video LLM the rolling window (uniformly subsampled to ``max_frames`` frames, oldest first),
asks it K times with sampling the VISA paper's question ("To find {instruction}, which percentage mark of the video
should I check? ..."), parses every answer (``parsing.parse_percentage``), averages the parsed values (0.5 when
none parse) and maps the mean p to window frame ``min(int(T * p), T - 1)`` -- T is the full window length, so a
percentage of the subsampled clip maps back to a frame of the window (the shown frames are spread evenly over it).
``KeyframeChoice.confidence`` is ``parsed_fraction * (1 - 2 * spread)`` (spread = standard deviation of the parsed
values); ``details`` holds the question, the raw answers, the parsed values, the shown positions and timings.
``references`` are left empty: the pipeline picks them (``core.references``).

Where the answers come from -- exactly one of:

* ``model_dir``: a local Hugging Face Qwen2-VL or Qwen2.5-VL checkpoint, run by ``qwen.QwenVideoAnswerer`` (own
  pixel preprocessing, since transformers' Qwen processors need torchvision; K answers sampled in one ``generate``
  call from a single prefill whose KV cache is repeated K times). Never ``trust_remote_code`` unless the option
  says so.
* ``answer_fn``: any *answer generator* -- a callable
  ``answer_fn(frames, question, *, k, seed, stamps) -> list[str]`` that returns K text answers for the RGB uint8
  frames (``HxWx3`` arrays, oldest first, their time stamps in ``stamps``) and the question. This is how the paper's
  own TFS model, LLaMA-VID (not in transformers), or any other video LLM plugs in: wrap its inference in such a
  callable (see docs/tfs.md). From a YAML configuration, give ``answer_fn: "my_package.module:attribute"``; the
  attribute is called with ``answer_fn_options`` (a mapping) to build the callable if those options are given,
  instantiated with no arguments if it is a class, and used as is otherwise.

What is real: the whole path runs with real transformers models (tested end to end with tiny random Qwen2-VL and
Qwen2.5-VL checkpoints built from configs). Not verified here: answer quality of real pretrained checkpoints (none
can be downloaded on the development machines), and LLaMA-VID itself (only its plug-in interface exists).
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ...core.errors import BackendFailure, ConfigError
from ...core.interfaces import FrameSampler
from ...core.options import OptionSet, device_option, dtype_option, option
from ...core.types import Frame, KeyframeChoice
from .parsing import aggregate_answers, position_to_index

# The VISA paper's wording and our spelled-out reading of the released client's wording.
QUESTION_TEMPLATES: dict[str, str] = {
    "paper": (
        "To find {instruction}, which percentage mark of the video should I check? "
        "Please respond with a number between 0% and 100%."
    ),
    "released": (
        "If I want to find '{instruction}', which percentage mark of the video should I check? "
        "Please choose one answer from 0%, 10%, 20%, 30%, 40%, 50%, 60%, 70%, 80%, 90% and 100%."
    ),
}


class AnswerGenerator(Protocol):
    """Anything that answers a question about a frame sequence K times (e.g. a wrapped LLaMA-VID)."""

    def __call__(
        self,
        frames: Sequence[np.ndarray],
        question: str,
        *,
        k: int,
        seed: int | None,
        stamps: Sequence[float],
    ) -> list[str]: ...


def subsample_positions(num_frames: int, max_frames: int) -> list[int]:
    """At most ``max_frames`` window positions spread evenly from the first to the last frame (both kept)."""
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if num_frames <= max_frames:
        return list(range(num_frames))
    if max_frames == 1:
        return [num_frames - 1]
    # floor(x + 0.5) rather than round(): banker's rounding could map two neighbours to the same frame
    return [math.floor(x + 0.5) for x in np.linspace(0, num_frames - 1, max_frames)]


def format_question(template: str, instruction: str) -> str:
    """Fill ``{instruction}`` of a question template (a QUESTION_TEMPLATES name or a custom format string)."""
    text = QUESTION_TEMPLATES.get(template, template)
    if "{instruction}" not in text:
        raise ConfigError(
            f"question must be one of {', '.join(QUESTION_TEMPLATES)} or a string containing '{{instruction}}'; "
            f"got {template!r}"
        )
    instruction = instruction.strip()
    if template == "paper":
        instruction = instruction.rstrip(".?! ")  # it sits mid-sentence: "To find <it>, which ..."
    return text.replace("{instruction}", instruction)


def resolve_answer_fn(answer_fn: Any, options: Mapping[str, Any] | None = None) -> Callable[..., list[str]]:
    """A callable answer generator from a callable or a ``"module:attribute"`` string (see module docstring)."""
    target = answer_fn
    if isinstance(answer_fn, str):
        module_name, _, attribute = answer_fn.partition(":")
        if not module_name or not attribute:
            raise ConfigError(f"answer_fn must look like 'package.module:attribute', got {answer_fn!r}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"answer_fn {answer_fn!r}: cannot import module {module_name!r}: {exc}") from exc
        try:
            target = getattr(module, attribute)
        except AttributeError as exc:
            raise ConfigError(f"answer_fn {answer_fn!r}: module {module_name!r} has no {attribute!r}") from exc
    if options is not None:
        if not callable(target):
            raise ConfigError(f"answer_fn {answer_fn!r} is not callable, so answer_fn_options cannot build it")
        target = target(**dict(options))
    elif isinstance(target, type):
        target = target()
    if not callable(target):
        raise ConfigError(f"answer_fn must be callable, got {type(target).__name__}")
    return target


@dataclass(frozen=True)
class TfsOptions(OptionSet):
    """Options of the "vlm" sampler; the model options are used with ``model_dir`` only."""

    model_dir: str | Path | None = option(None, "local Qwen2-VL / Qwen2.5-VL checkpoint directory (or answer_fn)")
    answer_fn: Any = option(
        None, "answer generator 'package.module:attribute' (from code also a callable; or model_dir): see docs/tfs.md"
    )
    answer_fn_options: dict[str, Any] | None = option(
        None, "keyword options with which answer_fn is called to build it"
    )
    k: int = option(10, "answers sampled per call", low=1)
    max_frames: int = option(16, "the window is shown subsampled to at most this many frames", low=1)
    seed: int | None = option(None, "an int makes every call deterministic for the same frames (null: unseeded)")
    question: str = option(
        "paper", "question template: " + ", ".join(QUESTION_TEMPLATES) + ", or a format string with {instruction}"
    )
    device: str | None = device_option()
    dtype: str | None = dtype_option()
    temperature: float = option(0.6, "sampling temperature (0: greedy)", low=0.0)
    top_p: float = option(0.9, "nucleus sampling mass, in (0, 1]", low=0.0, high=1.0)
    top_k: int = option(0, "top-k sampling (0: off)", low=0)
    max_new_tokens: int = option(24, "longest answer in tokens", low=1)
    min_pixels: int = option(56 * 56, "pixels per shown frame at least", low=1)
    max_pixels: int = option(224 * 224, "pixels per shown frame at most", low=1)
    generation: str = option(
        "prefix_cache",
        "how the K answers are generated: prefix_cache (one prefill, its KV cache repeated), num_return_sequences "
        "or sequential",
    )
    system_prompt: str | None = option(None, "system prompt of the chat (null: the model's usual one)")
    attn_implementation: str | None = option(None, "transformers attention implementation (null: its default)")
    trust_remote_code: bool = option(False, "run code shipped with the checkpoint (only for checkpoints you trust)")

    def check(self) -> None:
        if self.answer_fn_options is not None and self.answer_fn is None:
            raise ConfigError("answer_fn_options given without answer_fn")
        format_question(self.question, "x")  # validates the template now rather than on the first frame


class VideoLLMFrameSampler(FrameSampler):
    """TFS backend: K sampled percentage answers from a video LLM, parsed and averaged (see module docstring);
    the options are ``TfsOptions``."""

    Options = TfsOptions

    def __init__(self, options: TfsOptions | None = None, /, **values: Any) -> None:
        self.options = options = TfsOptions.build(options, values)
        # Checked here, not by TfsOptions: like the weight paths of the other backends, where the answers come from
        # is required when the sampler is built, while the option defaults leave it open.
        if (options.model_dir is None) == (options.answer_fn is None):
            raise ConfigError("the 'vlm' sampler needs exactly one of model_dir (a Qwen2-VL checkpoint) or answer_fn")
        self.k = options.k
        self.max_frames = options.max_frames
        self.seed = options.seed
        self.question = options.question
        if options.model_dir is not None:
            from .qwen import DEFAULT_SYSTEM_PROMPT, QwenVideoAnswerer

            self.answerer: Callable[..., list[str]] = QwenVideoAnswerer(
                options.model_dir,
                device=options.device,
                dtype=options.dtype,
                temperature=options.temperature,
                top_p=options.top_p,
                top_k=options.top_k,
                max_new_tokens=options.max_new_tokens,
                min_pixels=options.min_pixels,
                max_pixels=options.max_pixels,
                generation=options.generation,
                system_prompt=DEFAULT_SYSTEM_PROMPT if options.system_prompt is None else options.system_prompt,
                attn_implementation=options.attn_implementation,
                trust_remote_code=options.trust_remote_code,
            )
        else:
            self.answerer = resolve_answer_fn(options.answer_fn, options.answer_fn_options)

    def sample(self, frames: Sequence[Frame], instruction: str) -> KeyframeChoice:
        if len(frames) == 0:
            raise ValueError("the 'vlm' sampler needs at least one frame")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("the 'vlm' sampler needs a non-empty instruction")
        started = time.perf_counter()
        positions = subsample_positions(len(frames), self.max_frames)
        images = [frames[i].image for i in positions]
        stamps = [frames[i].stamp for i in positions]
        question = format_question(self.question, instruction)
        answers = self.answerer(images, question, k=self.k, seed=self.seed, stamps=stamps)
        if not isinstance(answers, (list, tuple)) or not all(isinstance(a, str) for a in answers):
            raise BackendFailure(f"the TFS answer generator must return a list of strings, got {answers!r:.200}")
        estimate = aggregate_answers(answers)
        key = position_to_index(estimate.position, len(frames))
        parsed = [v for v in estimate.parsed if v is not None]
        details: dict[str, Any] = {
            "sampler": "vlm",
            "question": question,
            "answers": list(answers),
            "parsed": estimate.parsed,
            "parsed_count": estimate.parsed_count,
            "position": estimate.position,
            "fallback": not parsed,
            "spread": estimate.spread,
            "min": min(parsed) if parsed else None,
            "max": max(parsed) if parsed else None,
            "shown_positions": positions,
            "latency_s": time.perf_counter() - started,
        }
        stats = getattr(self.answerer, "last_stats", None)
        if stats:
            details["model"] = dict(stats)
        return KeyframeChoice(key=key, references=[], confidence=estimate.confidence, details=details)

    def release(self) -> None:
        """Free the model's accelerator memory (it reloads on the next call); no-op for plain answer_fns."""
        release = getattr(self.answerer, "release", None)
        if callable(release):
            release()
