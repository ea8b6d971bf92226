"""VISA's tokenizer, reproducing the token ids of the slow ``LlamaTokenizer`` of transformers 4.31 that VISA used.

Why not just ``AutoTokenizer``: transformers 5 converts ``tokenizer.model`` into a fast tokenizer whose ids differ
from the slow 4.31 tokenizer on exactly the spots that matter for VISA (measured with a LLaMA-style sentencepiece
model, see the tests): around the added ``[SEG]`` token (4.31 strips the spaces next to a non-special added token,
so "It is [SEG]." gives ``▁It ▁is [SEG] ▁.``; transformers 5 gives ``▁It ▁is ▁ [SEG] ▁ .``, which changes the token
whose hidden state becomes h_seg) and at the start of the text chunks between ``<image>`` placeholders (every chunk
is encoded on its own and sentencepiece adds its dummy-prefix ``▁`` to each, also before a leading space).

``LegacyLlamaTokenizer`` re-implements the 4.31 slow path on top of the ``sentencepiece`` package:

1. split the text on the added tokens (``[SEG]`` ...) and the special tokens (``<s>``, ``</s>``, ``<unk>``), longest
   match first;
2. around a non-special added token, strip the whitespace of both neighbouring pieces (4.31's default for tokens
   without their own strip flags); LLaMA's special tokens are ``AddedToken(lstrip=False, rstrip=False)``: no strip;
3. encode every remaining piece with ``sp_model.encode(piece, out_type=str)`` and map pieces to ids
   (``legacy=True``, the default when ``tokenizer_config.json`` does not say otherwise; the ``legacy=False`` variant
   of 4.31, which marks the start of the text and removes the dummy prefix of pieces that follow a special token,
   is implemented too);
4. ``add_special_tokens=True`` prepends BOS (LLaMA: ``add_bos_token=True``, ``add_eos_token=False``).

``load_tokenizer(directory)`` uses it when the directory has ``tokenizer.model`` and ``sentencepiece`` is installed,
and falls back to ``AutoTokenizer`` otherwise (e.g. a directory with only ``tokenizer.json``, like the tiny test
checkpoint), saying which one it chose in ``tokenizer.visa_tokenizer_kind``.
"""

from __future__ import annotations

import json
import pathlib
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SPIECE_UNDERLINE = "▁"


@dataclass
class Encoding:
    input_ids: list[int]


def _token_content(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get("content")
    return str(value)


class LegacyLlamaTokenizer:
    """Token ids of transformers 4.31's slow ``LlamaTokenizer`` (see the module docstring). Only what VISA's
    prompt needs: ``__call__``, ``convert_tokens_to_ids``, ``convert_ids_to_tokens``, ``decode``, ``len``."""

    visa_tokenizer_kind = "legacy-llama (sentencepiece, transformers 4.31 slow semantics)"

    def __init__(
        self,
        model_file: str | pathlib.Path,
        added_tokens: Mapping[str, int] | None = None,
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        legacy: bool = True,
    ) -> None:
        try:
            import sentencepiece
        except ImportError as exc:
            raise ImportError(
                "the VISA (LLaMA) tokenizer needs the 'sentencepiece' package: pip install sentencepiece"
            ) from exc
        self.sp_model = sentencepiece.SentencePieceProcessor()
        self.sp_model.Load(str(model_file))
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.legacy = legacy
        self.unk_token_id = self.sp_model.unk_id()
        self.bos_token_id = self.sp_model.bos_id()
        self.eos_token_id = self.sp_model.eos_id()
        self.unk_token = self.sp_model.id_to_piece(self.unk_token_id)
        self.bos_token = self.sp_model.id_to_piece(self.bos_token_id)
        self.eos_token = self.sp_model.id_to_piece(self.eos_token_id)
        self.pad_token = self.unk_token  # VISA: tokenizer.pad_token = tokenizer.unk_token
        self.pad_token_id = self.unk_token_id
        base = self.sp_model.get_piece_size()
        self.added_tokens = {}
        for token, index in sorted((added_tokens or {}).items(), key=lambda item: item[1]):
            if int(index) < base:
                continue  # already a piece of the model (e.g. "<s>" listed again)
            self.added_tokens[token] = int(index)
        self.special_tokens = {
            self.bos_token: self.bos_token_id,
            self.eos_token: self.eos_token_id,
            self.unk_token: self.unk_token_id,
        }
        self._id_to_added = {v: k for k, v in self.added_tokens.items()}
        splitters = sorted(set(self.added_tokens) | set(self.special_tokens), key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(t) for t in splitters) + ")") if splitters else None

    def __len__(self) -> int:
        return self.sp_model.get_piece_size() + len(self.added_tokens)

    def _pieces(self, text: str) -> list[str]:
        if not self.legacy:  # 4.31's LlamaTokenizer.tokenize marks the true start of the text this way
            text = SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " ")
        parts = [p for p in self._split.split(text)] if self._split else [text]
        # re.split with a capture group alternates [text, token, text, token, ..., text]
        for i in range(1, len(parts), 2):
            if parts[i] in self.added_tokens:  # non-special added token: strip both neighbours (4.31 default)
                parts[i - 1] = parts[i - 1].rstrip()
                if i + 1 < len(parts):
                    parts[i + 1] = parts[i + 1].lstrip()
        out: list[str] = []
        for i, part in enumerate(parts):
            if not part:
                continue
            if i % 2:
                out.append(part)
            else:
                out.extend(self._sp_tokenize(part))
        return out

    def _sp_tokenize(self, text: str) -> list[str]:
        if self.legacy:
            return self.sp_model.encode(text, out_type=str)
        is_first = text.startswith(SPIECE_UNDERLINE)
        if is_first:
            text = text[1:]
        tokens = self.sp_model.encode(text, out_type=str)
        if not is_first and not text.startswith(" ") and tokens and tokens[0].startswith(SPIECE_UNDERLINE):
            tokens = ([tokens[0][1:]] if len(tokens[0]) > 1 else []) + tokens[1:]
        return tokens

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        if isinstance(tokens, str):
            if tokens in self.added_tokens:
                return self.added_tokens[tokens]
            if tokens in self.special_tokens:
                return self.special_tokens[tokens]
            return self.sp_model.piece_to_id(tokens)
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self._id_to_added.get(ids) or self.sp_model.id_to_piece(ids)
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    def __call__(self, text: str, add_special_tokens: bool = True) -> Encoding:
        ids = self.convert_tokens_to_ids(self._pieces(text))
        if add_special_tokens:
            ids = (
                ([self.bos_token_id] if self.add_bos_token else [])
                + ids
                + ([self.eos_token_id] if self.add_eos_token else [])
            )
        return Encoding(ids)

    def decode(self, ids: list[int]) -> str:
        text = []
        run: list[int] = []
        for index in ids:
            if index in self._id_to_added:
                text.append(self.sp_model.decode(run))
                run = []
                text.append(self._id_to_added[index])
            else:
                run.append(int(index))
        text.append(self.sp_model.decode(run))
        return "".join(text)


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def load_tokenizer(directory: str | pathlib.Path):
    """VISA's tokenizer from a checkpoint directory (see the module docstring). Raises ``ValueError`` with the
    reason when nothing usable is there."""
    directory = pathlib.Path(directory)
    config = _read_json(directory / "tokenizer_config.json")
    model_file = directory / "tokenizer.model"
    if model_file.is_file():
        try:
            import sentencepiece  # noqa: F401
        except ImportError:
            if not (directory / "tokenizer.json").is_file():
                raise ValueError(
                    f"{model_file} needs the 'sentencepiece' package (pip install sentencepiece)"
                ) from None
            warnings.warn(
                "sentencepiece is not installed: using tokenizer.json through transformers, whose token ids can "
                "differ from VISA's (transformers 4.31 slow tokenizer) around [SEG]; pip install sentencepiece",
                stacklevel=2,
            )
        else:
            added = dict(_read_json(directory / "added_tokens.json"))
            for index, entry in (config.get("added_tokens_decoder") or {}).items():
                content = _token_content(entry)
                if content is not None:
                    added.setdefault(content, int(index))
            # transformers 4.31 passes the stored value through: absent -> True, null -> falsy (non-legacy path)
            legacy = bool(config["legacy"]) if "legacy" in config else True
            return LegacyLlamaTokenizer(
                model_file,
                added,
                add_bos_token=bool(config.get("add_bos_token", True)),
                add_eos_token=bool(config.get("add_eos_token", False)),
                legacy=legacy,
            )
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    # AutoTokenizer reads config.json and warns that model_type "ChatUniVi" is unknown; irrelevant for the tokenizer.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:
        raise ValueError(f"could not load a tokenizer from {directory}: {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    if tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token
    tokenizer.visa_tokenizer_kind = f"transformers {type(tokenizer).__name__}"
    return tokenizer
