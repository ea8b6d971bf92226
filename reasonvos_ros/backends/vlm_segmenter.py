"""Reasoning key-frame segmenter from open weights: a VLM grounds the instruction, a SAM model draws the mask
(``segmenter: vlm_sam``).

Per call: the VLM (Qwen2.5-VL or Qwen3-VL, in process through stock transformers, or behind an OpenAI-compatible
server) sees up to ``max_references`` reference frames at ``reference_max_pixels`` and then the key frame at
``key_max_pixels``, each captioned ``Frame <n>`` with its time relative to the key frame (n counts the frames
shown, oldest first), and the instruction; it answers one JSON object (``models.vlm.grounding``): the frame, a box
and/or points, a short noun phrase, a one-sentence explanation and its confidence -- or "not present" and why.
The parsed box/points (in key-frame pixels; the family's coordinate convention is applied) prompt a SAM-family
image model (``Sam2Model`` or ``Sam3TrackerModel``; the project's own SAM with an original checkpoint as the
fallback; ``models.vlm.sam_prompt``) on the key frame; the mask is
clipped to the box grown by ``box_margin`` (SAM leaking far outside the box the VLM drew is not what it meant).

What the statuses mean (the pipeline maps them to the target's status):

* VLM says not present -> ``present=False``, reason "VLM: <its explanation>" (NOT_PRESENT, retried later).
* VLM places the object on a reference frame, not the key frame -> ``present=False``, reason says which frame.
* Unusable answer (malformed JSON, several objects, out-of-range or degenerate box, a frame that was not shown) ->
  ``BackendFailure`` with the parser's reason and the start of the answer (ERROR): evidence of nothing, so it is
  never reported as a mask nor as "not present".
* SAM mask smaller than ``min_area_pixels`` (or empty after clipping) -> ``present=False``.
* Server unreachable / timing out / HTTP errors after ``retries`` -> ``BackendFailure`` (ERROR), bounded in time.

``Segmentation.understanding`` carries the noun phrase, the explanation and the VLM's own confidence (0 when it
gave none; ``details["confidence_reported"]`` says which); ``score`` is SAM's IoU prediction clipped to [0, 1];
``details`` has the raw answer, the parsed box/points, parser notes and per-stage timings.

The options are ``VlmSamOptions``: the VLM runs in process (``model_dir``) or behind a server (``server_url``,
``server_model``, ``family``); SAM comes from ``sam_dir`` or, as the fallback, ``sam_checkpoint``; the optional
second step (``models.vlm.candidates``, on when ``candidates_dir`` is set): SAM 3's candidates for the noun phrase
are numbered on the key frame and a second VLM call picks one; its pick replaces the box-prompted mask, anything
else keeps it (``details["mask_source"]``, ``details["mark_status"]``, timings ``candidates_s`` / ``mark_vlm_s``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from reasonvos_ros.core.errors import BackendFailure, BackendUnavailable, ConfigError
from reasonvos_ros.core.interfaces import KeyframeSegmenter, check_positions
from reasonvos_ros.core.options import OptionSet, device_option, dtype_option, option
from reasonvos_ros.core.types import Frame, Segmentation, Understanding
from reasonvos_ros.models.vlm.grounding import CONVENTION_BY_FAMILY

from .visa_segmenter import _thin


@dataclass(frozen=True)
class VlmSamOptions(OptionSet):
    model_dir: str | None = option(None, "Qwen2.5-VL / Qwen3-VL checkpoint directory run in process (or server_url)")
    sam_dir: str | None = option(
        None, "Sam2Model / Sam3TrackerModel directory, e.g. facebook/sam2.1-hiera-large (or sam_checkpoint)"
    )
    sam_checkpoint: str | None = option(
        None, "fallback to sam_dir: an original segment-anything checkpoint such as sam_vit_h_4b8939.pth"
    )
    server_url: str | None = option(None, "OpenAI-compatible server, e.g. http://gpu-host:8000/v1 (or model_dir)")
    server_model: str | None = option(None, "with server_url: the model as the server names it")
    family: str | None = option(
        None,
        "with server_url: the served VLM's family (fixes the coordinate convention)",
        choices=tuple(CONVENTION_BY_FAMILY),
    )
    api_key: str | None = option(None, "with server_url: bearer token, if the server wants one")
    timeout_s: float = option(30.0, "with server_url: seconds per request (> 0)", low=0.0, high=3600.0)
    retries: int = option(1, "with server_url: retries after a failed request", low=0)
    jpeg_quality: int = option(90, "with server_url: JPEG quality of the images sent", low=10, high=100)
    device: str = device_option()
    dtype: str = dtype_option()
    sam_device: str | None = option(None, "device of the SAM model (null: device)")
    key_max_pixels: int = option(1280 * 28 * 28, "pixels of the key frame the VLM sees at most", low=28 * 28)
    reference_max_pixels: int = option(
        256 * 28 * 28, "pixels of each reference frame the VLM sees at most", low=28 * 28
    )
    max_references: int = option(4, "reference frames shown besides the key frame (thinned evenly)", low=0)
    max_new_tokens: int = option(192, "longest VLM answer in tokens", low=1)
    min_area_pixels: int = option(16, "smaller SAM masks are 'not present'", low=1)
    box_margin: float = option(
        0.1, "the mask is clipped to the VLM's box grown by this fraction of its side", low=0.0, high=1.0
    )
    min_box_side_px: float = option(2.0, "boxes with a shorter side are unusable answers", low=0.0)
    candidates_dir: str | None = option(
        None, "Sam3Model directory (e.g. facebook/sam3) for the second step (null: off)"
    )
    candidate_threshold: float = option(
        0.3, "second step: SAM 3 candidates under this score are dropped", low=0.0, high=1.0
    )
    max_candidates: int = option(9, "second step: at most this many numbered candidates", low=1)


class VlmSamSegmenter(KeyframeSegmenter):
    """See the module docstring, and ``VlmSamOptions`` for the options."""

    Options = VlmSamOptions

    def __init__(self, options: VlmSamOptions | None = None, /, **values: Any) -> None:
        import transformers

        self.options = options = VlmSamOptions.build(options, values)
        if int(transformers.__version__.split(".")[0]) < 5:
            raise BackendUnavailable(
                f"the vlm_sam segmenter needs transformers >= 5 (Qwen3-VL, SAM 3, SAM 2 image models without "
                f"torchvision); installed {transformers.__version__} (the project is tested with constraints.txt's)"
            )
        if bool(options.model_dir) == bool(options.server_url):
            raise BackendUnavailable(
                "the vlm_sam segmenter needs exactly one of options.model_dir (a Qwen2.5-VL / Qwen3-VL checkpoint "
                "directory, run in process) or options.server_url (an OpenAI-compatible server, e.g. "
                "http://gpu-host:8000/v1); `reasonvos weights` lists the model sets"
            )
        if bool(options.sam_dir) == bool(options.sam_checkpoint):
            raise BackendUnavailable(
                "the vlm_sam segmenter needs exactly one of options.sam_dir (a Sam2Model or Sam3TrackerModel "
                "directory, e.g. facebook/sam2.1-hiera-large; `reasonvos weights` lists them) or "
                "options.sam_checkpoint (an original segment-anything checkpoint such as sam_vit_h_4b8939.pth)"
            )
        self.lock = threading.RLock()
        if options.model_dir:
            from reasonvos_ros.models.vlm.chat import QwenImageChat

            self.chat = QwenImageChat(
                options.model_dir, device=options.device, dtype=options.dtype, max_new_tokens=options.max_new_tokens
            )
            self.family = self.chat.family
            if options.family and options.family != self.family:
                raise ConfigError(
                    f"options.family {options.family!r} contradicts the checkpoint's model_type {self.family!r}"
                )
        else:
            from reasonvos_ros.models.vlm.remote import OpenAIChatClient

            self.chat = OpenAIChatClient(
                options.server_url,
                model=options.server_model or "",
                family=options.family or "",
                api_key=options.api_key,
                timeout_s=options.timeout_s,
                retries=options.retries,
                max_new_tokens=options.max_new_tokens,
                jpeg_quality=options.jpeg_quality,
            )
            self.family = options.family
        self.convention = CONVENTION_BY_FAMILY[self.family]
        from reasonvos_ros.models.vlm.sam_prompt import BoxPromptSam, OriginalSamBoxPrompter

        if options.sam_dir:
            self.sam = BoxPromptSam(options.sam_dir, device=options.sam_device or options.device, dtype=options.dtype)
        else:
            self.sam = OriginalSamBoxPrompter(
                options.sam_checkpoint, device=options.sam_device or options.device, dtype=options.dtype
            )
        self.candidates = None
        if options.candidates_dir:
            from reasonvos_ros.models.vlm.candidates import Sam3TextCandidates

            self.candidates = Sam3TextCandidates(
                options.candidates_dir,
                options.sam_device or options.device,
                options.dtype,
                options.candidate_threshold,
                options.max_candidates,
            )

    def release(self) -> None:
        with self.lock:
            if hasattr(self.chat, "release"):
                self.chat.release()
            self.sam.release()
            if self.candidates is not None:
                self.candidates.release()

    def build_parts(self, frames: Sequence[Frame], key: int, references: Sequence[int]):
        """The question's frames in time order -> (prompt frames, images, key label)."""
        from reasonvos_ros.models.vlm.chat import ChatImage
        from reasonvos_ros.models.vlm.grounding import PromptFrame

        refs = [r for r in _thin(sorted(set(references) - {key}), self.options.max_references)]
        order = sorted([*refs, key], key=lambda position: (frames[position].stamp, position))
        key_stamp = frames[key].stamp
        prompt_frames, images = [], []
        for number, position in enumerate(order, start=1):
            is_key = position == key
            prompt_frames.append(PromptFrame(str(number), is_key, frames[position].stamp - key_stamp))
            images.append(
                ChatImage(
                    np.asarray(frames[position].image),
                    max_pixels=self.options.key_max_pixels if is_key else self.options.reference_max_pixels,
                )
            )
        key_label = next(f.label for f in prompt_frames if f.is_key)
        return prompt_frames, images, key_label, order

    def segment(self, frames: Sequence[Frame], key: int, references: Sequence[int], instruction: str) -> Segmentation:
        from reasonvos_ros.models.vlm.chat import check_image, seen_size
        from reasonvos_ros.models.vlm.grounding import build_question, parse_answer

        check_positions(frames, key, references)
        if not instruction or not instruction.strip():
            raise ConfigError("empty instruction")
        key_image = check_image(frames[key].image)
        height, width = key_image.shape[:2]
        with self.lock:
            timings: dict[str, float] = {}
            prompt_frames, images, key_label, order = self.build_parts(frames, key, references)
            key_seen = seen_size(key_image.shape, self.family, self.options.key_max_pixels, images[0].min_pixels)
            captions, tail = build_question(instruction, prompt_frames, self.convention, key_seen)
            parts: list[Any] = []
            for caption, image in zip(captions, images):
                parts += [caption, image]
            parts.append(tail)
            start = time.perf_counter()
            reply = self.chat.chat(parts)
            timings["vlm_s"] = time.perf_counter() - start
            key_index = [f.label for f in prompt_frames].index(key_label)
            answer = parse_answer(
                reply.text,
                key_label=key_label,
                frame_labels=[f.label for f in prompt_frames],
                convention=self.convention,
                seen_size=reply.seen_sizes[key_index],
                frame_size=(width, height),
                min_box_side_px=self.options.min_box_side_px,
            )
            details: dict[str, Any] = {
                "vlm_answer": reply.text[:2000],
                "vlm_stats": reply.stats,
                "answer_status": answer.status,
                "answer_notes": answer.notes,
                "frames_shown": [frames[p].index for p in order],
                "key_seen_size": list(reply.seen_sizes[key_index]),
                "confidence_reported": answer.confidence is not None,
                "timings": timings,
            }
            understanding = Understanding(
                target_phrase=answer.label, explanation=answer.explanation, confidence=answer.confidence or 0.0
            )
            empty = np.zeros((height, width), bool)
            if answer.status == "invalid":
                raise BackendFailure(f"VLM answer unusable: {answer.reason}; answer began {reply.text[:160]!r}")
            if answer.status in ("not_present", "other_frame"):
                reason = f"VLM: {answer.reason}" if answer.status == "not_present" else answer.reason
                return Segmentation(empty, 0.0, False, reason, details, understanding)
            details["box_xyxy"] = list(answer.box_xyxy) if answer.box_xyxy else None
            details["points_xy"] = [list(p) for p in answer.points_xy]
            mask, iou, sam_stats = self.sam.segment(
                key_image, answer.box_xyxy, answer.points_xy, cache_key=frames[key].uid
            )
            timings.update(sam_stats)
            mask = self._clip_to_box(mask, answer.box_xyxy, details)
            score = float(min(max(iou, 0.0), 1.0))
            details["mask_source"] = "sam box/points prompt"
            if self.candidates is not None and answer.label:
                mask, score = self._pick_candidate(key_image, answer, instruction, key_label, mask, score, details)
        area = int(np.count_nonzero(mask))
        details["area_px"] = area
        details["iou_prediction"] = iou
        if area < self.options.min_area_pixels:
            reason = f"SAM mask for the VLM's {'box' if answer.box_xyxy else 'points'} too small ({area} px)"
            return Segmentation(empty, score, False, reason, details, understanding)
        return Segmentation(mask, score, True, "", details, understanding)

    def _pick_candidate(self, key_image, answer, instruction, key_label, mask, score, details):
        """SAM 3 text candidates for the noun phrase, numbered on the frame; the VLM's pick replaces the mask."""
        from reasonvos_ros.models.vlm.candidates import draw_marks, mark_question, parse_mark
        from reasonvos_ros.models.vlm.chat import ChatImage

        timings = details["timings"]
        candidates, stats = self.candidates.candidates(key_image, answer.label)
        timings["candidates_s"] = stats["candidates_s"]
        details["candidates"] = [{"box_xyxy": list(c.box_xyxy), "score": c.score} for c in candidates]
        if not candidates:
            details["mark_status"] = "no candidates"
            return mask, score
        marked = draw_marks(key_image, candidates)
        start = time.perf_counter()
        reply = self.chat.chat(
            [
                f"Frame {key_label} (key frame):",
                ChatImage(marked, max_pixels=self.options.key_max_pixels),
                mark_question(instruction, answer.label, len(candidates)),
            ]
        )
        timings["mark_vlm_s"] = time.perf_counter() - start
        status, mark, why = parse_mark(reply.text, len(candidates))
        details["mark_answer"] = reply.text[:500]
        details["mark_status"] = status
        if status != "picked":
            details["mark_reason"] = why
            return mask, score
        chosen = candidates[mark - 1]
        details["mask_source"] = f"sam3 text candidate {mark}"
        details["box_xyxy_candidate"] = list(chosen.box_xyxy)
        return chosen.mask.copy(), float(min(max(chosen.score, 0.0), 1.0))

    def _clip_to_box(self, mask, box, details):
        """SAM leaking far outside the VLM's box is not what the VLM meant: keep the box grown by box_margin."""
        if box is None:
            return mask
        height, width = mask.shape
        x1, y1, x2, y2 = box
        grow_x, grow_y = self.options.box_margin * (x2 - x1), self.options.box_margin * (y2 - y1)
        keep = np.zeros_like(mask)
        keep[
            max(0, int(np.floor(y1 - grow_y))) : min(height, int(np.ceil(y2 + grow_y))),
            max(0, int(np.floor(x1 - grow_x))) : min(width, int(np.ceil(x2 + grow_x))),
        ] = True
        details["area_outside_box_px"] = int(np.count_nonzero(mask & ~keep))
        return mask & keep
