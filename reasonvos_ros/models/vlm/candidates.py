"""Optional second step of vlm_sam: SAM 3's text-prompted candidates, drawn as numbered marks, picked by the VLM.

After the VLM has grounded the instruction (box + noun phrase), ``Sam3TextCandidates`` runs ``Sam3Model`` (SAM 3's
open-vocabulary detector + masks, stock transformers) with the noun phrase on the key frame. Instances scoring
above ``score_threshold`` (score = sigmoid(logit) x sigmoid(presence logit), SAM 3's post-processing) become
candidates, at most ``max_candidates``; ``draw_marks`` outlines each and writes its number at an interior point
(the maximum of the mask's distance transform, so the number sits on the object); the VLM is asked which number
the instruction means (``{"mark": n}`` or ``{"mark": null}``). A valid pick replaces the box-prompted mask with that
candidate's mask; "none", an invalid answer or no candidate keep the box-prompted mask (the step can only refine).

Preprocessing as ``Sam3ImageProcessor``: square resize to 1008, mean/std 0.5 (a ``preprocessor_config.json``
overrides); the text is tokenised with the checkpoint's tokenizer, padded to 32 tokens like ``Sam3Processor``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...core.errors import BackendUnavailable, ConfigError
from ..weights import free_device_memory, read_hf_config, resolve_device, resolve_dtype
from .sam_prompt import read_image_processor

MAX_MARKS = 20
# distinct colours (RGB) for the outlines; numbers are drawn white on a dark box for contrast
_COLOURS = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]


@dataclass
class Candidate:
    mask: np.ndarray  # HxW bool, key-frame size
    box_xyxy: tuple[float, float, float, float]
    score: float


class Sam3TextCandidates:
    """``candidates(image, phrase) -> (list[Candidate] best first, stats)``."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str | None = "auto",
        dtype: str | None = "auto",
        score_threshold: float = 0.3,
        max_candidates: int = 9,
    ) -> None:
        self.model_dir = Path(model_dir).expanduser()
        config_path = self.model_dir / "config.json"
        model_type = read_hf_config(self.model_dir, "SAM 3", " (candidates_dir option)").get("model_type")
        if model_type not in ("sam3", "sam3_video"):
            raise ConfigError(f"{config_path}: model_type {model_type!r} is not SAM 3 (Sam3Model)")
        if not 0 <= float(score_threshold) < 1 or not 1 <= int(max_candidates) <= MAX_MARKS:
            raise ConfigError(
                f"candidate_threshold must be in [0, 1) and max_candidates in 1..{MAX_MARKS}; got "
                f"{score_threshold}, {max_candidates}"
            )
        self.score_threshold = float(score_threshold)
        self.max_candidates = int(max_candidates)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        # Sam3ImageProcessor's defaults
        self.image_size, self.mean, self.std = read_image_processor(self.model_dir, 1008, (0.5,) * 3, (0.5,) * 3)
        self.model = None
        self.load()

    def load(self) -> None:
        from transformers import AutoTokenizer, Sam3Model

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
            model = Sam3Model.from_pretrained(str(self.model_dir), dtype=self.dtype, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"cannot load SAM 3 from {self.model_dir}: {exc}") from exc
        self.model = model.to(self.device).eval()

    def release(self) -> None:
        self.model = None
        free_device_memory(self.device)

    def candidates(self, image: np.ndarray, phrase: str) -> tuple[list[Candidate], dict[str, Any]]:
        import torch
        import torch.nn.functional as F

        if self.model is None:
            self.load()
        height, width = image.shape[:2]
        start = time.perf_counter()
        resized = cv2.resize(image, (self.image_size, self.image_size), interpolation=cv2.INTER_LINEAR)
        pixels = torch.from_numpy(((resized.astype(np.float32) / 255.0 - self.mean) / self.std).transpose(2, 0, 1))
        text = self.tokenizer([phrase], padding="max_length", max_length=32, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            output = self.model(
                pixel_values=pixels[None].to(self.device, self.dtype),
                input_ids=text["input_ids"].to(self.device),
                attention_mask=text["attention_mask"].to(self.device),
            )
            scores = output.pred_logits.float().sigmoid()[0]
            if output.presence_logits is not None:
                scores = scores * output.presence_logits.float().sigmoid()[0]
            order = [int(i) for i in torch.argsort(scores, descending=True) if scores[i] > self.score_threshold]
            order = order[: self.max_candidates]
            found = []
            if order:
                masks = F.interpolate(
                    output.pred_masks[0, order][None].float(),
                    size=(height, width),
                    mode="bilinear",
                    align_corners=False,
                )[0]
                boxes = output.pred_boxes[0, order].float().cpu().numpy()  # xyxy in 0..1
                for j, index in enumerate(order):
                    mask = (masks[j] > 0).cpu().numpy()  # sigmoid > 0.5, SAM 3's mask threshold
                    if not mask.any():
                        continue
                    x1, y1, x2, y2 = (boxes[j] * [width, height, width, height]).tolist()
                    found.append(Candidate(mask, (x1, y1, x2, y2), float(scores[index])))
        return found, {"candidates_s": time.perf_counter() - start, "candidates_found": len(found)}


def mark_position(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the interior point farthest from the mask's border."""
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def draw_marks(image: np.ndarray, candidates: list[Candidate]) -> np.ndarray:
    """The key frame with each candidate outlined and numbered 1..N at an interior point."""
    marked = np.ascontiguousarray(image.copy())
    scale = max(0.4, min(image.shape[:2]) / 500)
    for number, candidate in enumerate(candidates, start=1):
        colour = _COLOURS[(number - 1) % len(_COLOURS)]
        contours, _ = cv2.findContours(candidate.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(marked, contours, -1, colour, max(1, int(2 * scale)))
        x, y = mark_position(candidate.mask)
        label = str(number)
        (text_w, text_h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, int(2 * scale)))
        x0, y0 = max(0, x - text_w // 2), max(text_h, y + text_h // 2)
        cv2.rectangle(marked, (x0 - 2, y0 - text_h - 2), (x0 + text_w + 2, y0 + base), (0, 0, 0), -1)
        cv2.putText(marked, label, (x0, y0), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), max(1, int(2 * scale)))
    return marked


def mark_question(instruction: str, phrase: str, count: int) -> str:
    return (
        f"The key frame again, with {count} candidate objects for {json.dumps(phrase)} outlined and numbered 1 to "
        f"{count}.\nInstruction: {json.dumps(instruction, ensure_ascii=False)}\n"
        "Which number is the object the instruction refers to? Answer with one JSON object and nothing else: "
        '{"mark": <number>} or, if none of them is, {"mark": null}'
    )


def parse_mark(text: str, count: int) -> tuple[str, int | None, str]:
    """-> (status "picked" / "none" / "invalid", 1-based mark or None, reason)."""
    from .grounding import _THINK, MAX_ANSWER_CHARS, parse_json_object

    obj = parse_json_object(_THINK.sub("", (text or "")[:MAX_ANSWER_CHARS]))
    if not isinstance(obj, dict) or "mark" not in obj:
        return "invalid", None, f"no {{'mark': ...}} object in {str(text)[:80]!r}"
    mark = obj["mark"]
    if mark is None or (isinstance(mark, str) and mark.strip().lower() in ("none", "null", "")):
        return "none", None, "the VLM says none of the candidates is the target"
    if isinstance(mark, str) and re.fullmatch(r"\s*\d+\s*", mark):
        mark = int(mark)
    if isinstance(mark, bool) or not isinstance(mark, int) or not 1 <= mark <= count:
        return "invalid", None, f"mark {mark!r} is not one of 1..{count}"
    return "picked", mark, ""
