"""VISA's prompt: llava_v1 conversation, reference-video question templates, image placeholders and the [SEG] slot.

The user turn (VISA ``utils/utils.py`` templates, first entry, as used by its evaluation):

* instruction not ending with '?':
  ``Reference Video: (0)<image>, (1)<image>, ... \\nTarget Image: <image> \\nWhat is {sent} in the Reference Video?
  Please respond with segmentation mask in the Target Image.``
* instruction ending with '?':
  ``... \\nTarget Image: <image> \\n{sent} Please find it in the Reference Video and respond with segmentation mask in
  the Target Image.``

The instruction is lower-cased with whitespace collapsed (as VISA's ReVOS evaluation data loader does). The
conversation is llava_v1 (system line, ``USER: ... ASSISTANT: ...``, separators " " and "</s>") and the answer is
teacher-forced: ``It is [SEG].``. ``<image>`` placeholders become ``IMAGE_TOKEN_INDEX`` (-200) in the token ids
(LLaVA's ``tokenizer_image_token``: one BOS, every text chunk tokenised on its own) and each is later replaced by
its frame's visual tokens (112 per frame), so positions after it shift by ``tokens_per_image - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IMAGE_TOKEN_INDEX = -200
IMAGE_PLACEHOLDER = "<image>"
SEG_TOKEN = "[SEG]"
DEFAULT_ANSWER = "It is [SEG]."

SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
ROLES = ("USER", "ASSISTANT")
TURN_SEPARATORS = (" ", "</s>")

_VIDEO_SLOT = "<video>"
SHORT_QUESTION_TEMPLATE = (
    "Reference Video: " + _VIDEO_SLOT + " \nTarget Image: " + IMAGE_PLACEHOLDER + " \n"
    "What is {sent} in the Reference Video? Please respond with segmentation mask in the Target Image."
)
LONG_QUESTION_TEMPLATE = (
    "Reference Video: " + _VIDEO_SLOT + " \nTarget Image: " + IMAGE_PLACEHOLDER + " \n"
    "{sent} Please find it in the Reference Video and respond with segmentation mask in the Target Image."
)


def normalize_instruction(instruction: str, lowercase: bool = True) -> str:
    """Collapse whitespace (and lower-case, as VISA's evaluation does); an empty instruction is an error."""
    text = " ".join(instruction.split())
    if not text:
        raise ValueError("the instruction is empty")
    return text.lower() if lowercase else text


def build_question(instruction: str, num_references: int, lowercase: bool = True) -> str:
    """User message with ``num_references`` reference placeholders and one target placeholder (last)."""
    if num_references < 0:
        raise ValueError(f"num_references must be >= 0, got {num_references}")
    sent = normalize_instruction(instruction, lowercase)
    template = LONG_QUESTION_TEMPLATE if sent.endswith("?") else SHORT_QUESTION_TEMPLATE
    video = ", ".join(f"({i}){IMAGE_PLACEHOLDER}" for i in range(num_references))
    return template.format(sent=sent).replace(_VIDEO_SLOT, video)


def build_conversation(question: str, answer: str = DEFAULT_ANSWER) -> str:
    """llava_v1 prompt with the teacher-forced assistant answer."""
    user, assistant = ROLES
    return (
        SYSTEM_PROMPT
        + TURN_SEPARATORS[0]
        + f"{user}: {question}{TURN_SEPARATORS[0]}"
        + f"{assistant}: {answer}{TURN_SEPARATORS[1]}"
    )


def tokenize_with_images(prompt: str, tokenizer, image_token_index: int = IMAGE_TOKEN_INDEX) -> list[int]:
    """Token ids of ``prompt`` with every ``<image>`` replaced by ``image_token_index``.

    Like LLaVA's ``tokenizer_image_token``: each text chunk between placeholders is tokenised separately, and the
    BOS token (if the tokenizer adds one) appears once, at the start."""
    chunks = prompt.split(IMAGE_PLACEHOLDER)
    ids: list[int] = []
    bos = getattr(tokenizer, "bos_token_id", None)
    probe = tokenizer("").input_ids
    if bos is not None and probe[:1] == [bos]:
        ids.append(bos)
    for index, chunk in enumerate(chunks):
        if index:
            ids.append(image_token_index)
        ids.extend(tokenizer(chunk, add_special_tokens=False).input_ids)
    return ids


def seg_token_id(tokenizer) -> int:
    """Id of the added ``[SEG]`` token; it must tokenise to exactly that one id."""
    ids = tokenizer(SEG_TOKEN, add_special_tokens=False).input_ids
    unk = getattr(tokenizer, "unk_token_id", None)
    if len(ids) != 1 or (unk is not None and ids[0] == unk):
        raise ValueError(
            f"the tokenizer has no single {SEG_TOKEN} token (it splits into {ids}); a VISA tokenizer has it added"
        )
    return int(ids[0])


@dataclass
class PromptLayout:
    """Where things are in the prompt before and after the image placeholders are expanded."""

    input_ids: torch.Tensor  # (L,) int64 with IMAGE_TOKEN_INDEX placeholders
    image_positions: list[int]  # placeholder positions in input_ids, in order (frame k feeds the k-th)
    seg_position: int  # position of [SEG] in input_ids
    tokens_per_image: int
    seg_hidden_index: int  # expanded position whose next token is [SEG]

    @property
    def expanded_length(self) -> int:
        return int(self.input_ids.numel()) + len(self.image_positions) * (self.tokens_per_image - 1)


def expanded_index(position: int, image_positions: Sequence[int], tokens_per_image: int) -> int:
    """Expanded-sequence index of the (non-placeholder) token at ``position`` of the placeholder sequence."""
    before = sum(1 for p in image_positions if p < position)
    return position + before * (tokens_per_image - 1)


def prompt_layout(
    input_ids: torch.Tensor | Sequence[int],
    seg_id: int,
    tokens_per_image: int,
    image_token_index: int = IMAGE_TOKEN_INDEX,
) -> PromptLayout:
    """Locate placeholders and [SEG]; the hidden state used for h_seg is the one just before [SEG] in the expanded
    sequence (the one that predicts [SEG]). VISA computes it as ``(pos - 1) + 111 * num_images``, which is the same
    number when every placeholder precedes [SEG] (always the case in its prompt)."""
    ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)
    image_positions = torch.nonzero(ids == image_token_index).flatten().tolist()
    seg_positions = torch.nonzero(ids == seg_id).flatten().tolist()
    if len(seg_positions) != 1:
        raise ValueError(f"the prompt must contain exactly one [SEG] token (id {seg_id}), found {len(seg_positions)}")
    seg_position = seg_positions[0]
    if seg_position == 0:
        raise ValueError("[SEG] cannot be the first token: no position predicts it")
    seg_hidden = expanded_index(seg_position, image_positions, tokens_per_image) - 1
    return PromptLayout(ids, image_positions, seg_position, tokens_per_image, seg_hidden)


def build_prompt_ids(
    tokenizer, instruction: str, num_references: int, answer: str = DEFAULT_ANSWER, lowercase: bool = True
) -> list[int]:
    """Instruction -> token ids of the full VISA prompt (``num_references`` reference placeholders + target)."""
    prompt = build_conversation(build_question(instruction, num_references, lowercase), answer)
    return tokenize_with_images(prompt, tokenizer)
