"""Loading VISA weights: a merged VISA directory (Hugging Face layout), ``sam_vit_h_4b8939.pth`` and a CLIP directory.

What a user downloads (the authors' merged VISA-7B release, segment-anything's ``sam_vit_h_4b8939.pth`` and
``openai/clip-vit-large-patch14``) and how VISA puts it together, in its order:

1. SAM is built from the ``sam_vit_h_4b8939.pth`` file (original segment-anything keys, no prefix);
2. the merged VISA checkpoint (``config.json``, tokenizer files, ``model.safetensors`` / ``pytorch_model.bin``, or
   shards with ``*.index.json``) provides the LLaMA (``model.embed_tokens/layers/norm``, ``lm_head``),
   ``model.mm_projector``, ``model.text_hidden_fcs`` and the fine-tuned SAM (``model.visual_model.*``, which
   overwrites step 1). The ``model.layers.N.self_attn.rotary_emb.inv_freq`` constants are checked, not loaded;
   any ``model.vision_tower.*`` keys are ignored because VISA reloads the tower from CLIP at run time;
3. the CLIP vision tower comes from a CLIP directory (``CLIPVisionModel`` or full ``CLIPModel`` layout, e.g.
   ``openai/clip-vit-large-patch14``; text-side keys are ignored).

Loading is strict by default: every expected key must be present with its shape, and unknown keys are errors;
the ``VisaLoadReport`` lists missing / unexpected / mis-shaped keys per source in readable form. Weights are read
with safetensors or ``torch.load(weights_only=True)`` only (``models.weights``). The LLaMA is built on the meta
device and the checkpoint tensors are assigned to it (converted shard by shard to the target dtype and device), so
a 7B model needs no second copy in memory. A tqdm bar shows progress over the tensors of the shards.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..sam import SamCheckpointError, SamConfig, load_sam_checkpoint
from ..weights import LoadReport, WeightsError, as_tensor, iter_tensors, resolve_device_dtype, weight_files
from .ctm import DEFAULT_STAGES
from .modeling import VisaConfig, VisaModel
from .prompt import IMAGE_TOKEN_INDEX, seg_token_id

SAM_PREFIX = "model.visual_model."
VISION_TOWER_PREFIX = "model.vision_tower.vision_tower."
_LLM_KEY = re.compile(r"^(model\.(embed_tokens|layers\.\d+|norm)\.|lm_head\.)")
_ROTARY_KEY = re.compile(r"^model\.layers\.(\d+)\.self_attn\.rotary_emb\.inv_freq$")
_STAGE_K = tuple(k for _, k in DEFAULT_STAGES)  # Chat-UniVi's kNN sizes for its three spatial stages

# Keys of a full CLIPModel checkpoint that the vision tower does not use.
_CLIP_IGNORED = re.compile(r"^(text_model\.|logit_scale$|text_projection\.|visual_projection\.)")
_CLIP_BUFFERS = re.compile(r"(^|\.)position_ids$")

# LlamaConfig fields taken from a VISA/Chat-UniVi config.json (the rest of that file describes the multimodal parts).
_LLAMA_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "hidden_act",
    "rope_theta",
    "rope_scaling",
    "attention_bias",
    "mlp_bias",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "tie_word_embeddings",
)


class VisaCheckpointError(WeightsError):
    """A VISA/SAM/CLIP file is missing, unreadable, or does not match the model (message names the path/keys)."""


@dataclass
class VisaLoadReport:
    """One ``LoadReport`` per source, in loading order: the SAM file, the VISA directory, the CLIP directory."""

    sources: list[LoadReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.sources)

    def __str__(self) -> str:
        return "\n".join(line for s in self.sources for line in s.lines())


# ----------------------------------------------------------------------------------------------------------------
# reading files


def _require(path: pathlib.Path, what: str) -> pathlib.Path:
    if not path.exists():
        raise VisaCheckpointError(f"{what} not found: {path}")
    return path


def _file_tensors(path: pathlib.Path):
    """(key, tensor) pairs of one shard, memory-mapped where the format allows (no second copy of a 7B model)."""
    return iter_tensors(path, what="VISA weight file", error=VisaCheckpointError, mmap=True)


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tensor", disable=not enabled, leave=False)


# ----------------------------------------------------------------------------------------------------------------
# configuration


def _read_json(path: pathlib.Path, what: str) -> dict[str, Any]:
    _require(path, what)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise VisaCheckpointError(f"{path} is not valid JSON: {exc}") from exc


def clip_config_from_dir(clip_dir: str | pathlib.Path):
    """CLIPVisionConfig from a CLIP directory's config.json (a CLIPVisionModel config or a full CLIP config)."""
    from transformers import CLIPVisionConfig

    raw = _read_json(pathlib.Path(clip_dir) / "config.json", "CLIP config")
    if "vision_config" in raw:
        raw = raw["vision_config"]
    raw = {k: v for k, v in raw.items() if k not in ("architectures", "transformers_version", "model_type")}
    return CLIPVisionConfig(**raw)


def llama_config_from_dict(raw: Mapping[str, Any]):
    from transformers import LlamaConfig

    missing = [
        k
        for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")
        if k not in raw
    ]
    if missing:
        raise VisaCheckpointError(f"VISA config.json lacks the LLaMA fields {missing}")
    values = {k: raw[k] for k in _LLAMA_FIELDS if k in raw and raw[k] is not None}
    values.setdefault("tie_word_embeddings", False)
    return LlamaConfig(**values)


def cluster_stages_from_config(raw: Mapping[str, Any]) -> tuple[tuple[float, int], ...]:
    """Chat-UniVi's spatial clustering rates from the checkpoint config (``config.config``) with k = 5, 3, 3."""
    cluster = raw.get("config")
    if cluster is None:
        return DEFAULT_STAGES
    if not cluster.get("use_cluster", False):
        raise VisaCheckpointError(
            "the checkpoint config disables Chat-UniVi clustering (use_cluster false); VISA uses it"
        )
    try:
        rates = [float(cluster[f"spatial_cluster_rate{i}"]) for i in range(3)]
    except KeyError as exc:
        raise VisaCheckpointError(f"checkpoint config.config lacks {exc.args[0]}") from exc
    return tuple((rate, k) for rate, k in zip(rates, _STAGE_K))


def visa_config(
    raw: Mapping[str, Any], clip_config, sam_config: SamConfig, seg_id: int, vocab_size: int | None = None
) -> VisaConfig:
    """VisaConfig from a VISA ``config.json`` dict plus the CLIP and SAM configs and the [SEG] id."""
    if raw.get("mm_use_im_start_end", False):
        raise VisaCheckpointError("mm_use_im_start_end=True is not supported (VISA checkpoints use False)")
    llama = llama_config_from_dict(dict(raw, vocab_size=vocab_size or raw.get("vocab_size")))
    mm_hidden = raw.get("mm_hidden_size", clip_config.hidden_size)
    if mm_hidden != clip_config.hidden_size:
        raise VisaCheckpointError(
            f"the VISA checkpoint expects {mm_hidden}-d vision features but the CLIP tower has hidden size "
            f"{clip_config.hidden_size}"
        )
    if raw.get("mm_vision_select_feature", "patch") != "patch":
        raise VisaCheckpointError("only mm_vision_select_feature='patch' is supported (VISA's setting)")
    if not 0 <= seg_id < llama.vocab_size:
        raise VisaCheckpointError(f"[SEG] id {seg_id} is outside the model vocabulary (size {llama.vocab_size})")
    return VisaConfig(
        llama=llama,
        clip=clip_config,
        sam=sam_config,
        seg_token_id=seg_id,
        select_layer=int(raw.get("mm_vision_select_layer", -2)),
        cluster_stages=cluster_stages_from_config(raw),
        out_dim=int(raw.get("out_dim", 256)),
        image_token_index=IMAGE_TOKEN_INDEX,
        extras={k: raw[k] for k in ("model_type", "architectures", "mm_vision_tower") if k in raw},
    )


# ----------------------------------------------------------------------------------------------------------------
# routing tensors onto the modules


def _convert(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)


def clip_tower_key(original: str, tower_keys: set[str]) -> str:
    """``vision_model.X`` (original CLIP naming) -> the key used by this transformers version's CLIPVisionModel."""
    if original in tower_keys:
        return original
    if original.startswith("vision_model.") and original[len("vision_model.") :] in tower_keys:
        return original[len("vision_model.") :]
    return original


def _clip_message_prefix(tower: torch.nn.Module) -> str:
    """transformers 5 dropped the ``vision_model.`` level of CLIPVisionModel; messages use the original names."""
    return "" if any(k.startswith("vision_model.") for k in tower.state_dict()) else "vision_model."


class _ModuleFiller:
    """Collects tensors for one module and loads them at the end, checking names and shapes."""

    def __init__(self, module: torch.nn.Module, prefix: str, assign: bool = False) -> None:
        self.module = module
        self.prefix = prefix  # prefix of the source names, for messages
        self.assign = assign
        self.expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        self.tensors: dict[str, torch.Tensor] = {}

    def add(self, internal: str, source_key: str, tensor: torch.Tensor, report: LoadReport) -> None:
        if report.fits(source_key, tensor.shape, self.expected.get(internal)):
            self.tensors[internal] = tensor

    def finish(self, report: LoadReport, required: bool = True) -> None:
        if required:
            report.missing += [self.prefix + k for k in self.expected if k not in self.tensors]
        if self.tensors:
            self.module.load_state_dict(self.tensors, strict=False, assign=self.assign)
            report.loaded += len(self.tensors)
        self.tensors = {}


def _check_rotary(model: VisaModel, key: str, tensor: torch.Tensor, report: LoadReport) -> None:
    layer = int(_ROTARY_KEY.match(key).group(1))
    if layer >= model.config.llama.num_hidden_layers:
        report.unexpected.append(key)
        return
    cfg = model.config.llama
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    theta = cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else 10000.0
    expected = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    fits = report.fits(key, tensor.shape, expected.shape)
    if fits and not tensor.is_meta and not torch.allclose(tensor.float().cpu(), expected, rtol=1e-3, atol=0.0):
        report.notes.append(f"{key} differs from the RoPE frequencies of the config (theta {theta}); RoPE scaling?")
        report.shape_mismatches.append(f"{key} (values differ from the config's RoPE frequencies)")
    report.ignore("constant rotary inv_freq buffers (checked against the config)")


def rebuild_rotary_embedding(model: VisaModel, device: torch.device) -> None:
    """Recompute the LLaMA's non-persistent RoPE buffers on ``device`` (they are not in any checkpoint)."""
    rotary = model.llm.model.rotary_emb
    with torch.device(device):
        model.llm.model.rotary_emb = type(rotary)(config=model.config.llama)


class VisaStateLoader:
    """Routes VISA-layout tensors (``model.*``, ``lm_head.*``) onto a ``VisaModel``.

    ``vision_tower`` says what to do with ``model.vision_tower.*`` keys: "load" (golden data carries the tower) or
    "ignore" (merged checkpoints; the tower comes from the CLIP directory). SAM tensors are collected and loaded
    with the SAM module's own loader; ``sam_required`` makes every SAM key mandatory in this source.
    """

    def __init__(
        self,
        model: VisaModel,
        report: LoadReport,
        device: torch.device,
        dtype: torch.dtype | None,
        vision_tower: str = "ignore",
        sam_required: bool = False,
    ) -> None:
        self.model = model
        self.report = report
        self.device = torch.device(device)
        self.dtype = dtype
        self.vision_tower = vision_tower
        self.sam_required = sam_required
        self.llm = _ModuleFiller(model.llm, "", assign=True)
        self.projector = _ModuleFiller(model.visual.mm_projector, "model.mm_projector.")
        self.text_fcs = _ModuleFiller(model.text_hidden_fcs, "model.text_hidden_fcs.")
        tower = model.visual.tower.vision_tower
        self.tower = _ModuleFiller(tower, VISION_TOWER_PREFIX + _clip_message_prefix(tower))
        self.tower_keys = set(self.tower.expected)
        self.sam_tensors: dict[str, torch.Tensor] = {}

    def add(self, key: str, value: Any) -> None:
        tensor = as_tensor(value, key, VisaCheckpointError)
        if _ROTARY_KEY.match(key):
            _check_rotary(self.model, key, tensor, self.report)
        elif _LLM_KEY.match(key):
            self.llm.add(key, key, _convert(tensor, self.device, self.dtype), self.report)
        elif key.startswith("model.mm_projector."):
            self.projector.add(
                key[len("model.mm_projector.") :], key, _convert(tensor, self.device, self.dtype), self.report
            )
        elif key.startswith("model.text_hidden_fcs."):
            self.text_fcs.add(
                key[len("model.text_hidden_fcs.") :], key, _convert(tensor, self.device, self.dtype), self.report
            )
        elif key.startswith(SAM_PREFIX):
            self.sam_tensors[key] = tensor
        elif key.startswith("model.vision_tower."):
            if self.vision_tower == "load" and key.startswith(VISION_TOWER_PREFIX):
                internal = clip_tower_key(key[len(VISION_TOWER_PREFIX) :], self.tower_keys)
                self.tower.add(internal, key, _convert(tensor, self.device, self.dtype), self.report)
            elif _CLIP_BUFFERS.search(key):
                self.report.ignore("vision tower position_ids buffers")
            else:
                self.report.ignore("model.vision_tower.* (VISA reloads the CLIP tower from the CLIP directory)")
        else:
            self.report.unexpected.append(key)

    def finish(self) -> None:
        self.llm.finish(self.report)
        self.projector.finish(self.report)
        self.text_fcs.finish(self.report)
        if self.vision_tower == "load":
            self.tower.finish(self.report)
        rebuild_rotary_embedding(self.model, self.device)
        if self.sam_tensors or self.sam_required:
            try:
                sam_report = self.model.sam.load_original_state_dict(self.sam_tensors, prefix=SAM_PREFIX, strict=False)
            except SamCheckpointError as exc:
                self.report.notes.append(f"SAM part: {exc}")
                self.report.unexpected.append(f"{SAM_PREFIX}* (could not be loaded)")
                return
            self.report.loaded += sam_report.loaded
            self.report.unexpected += sam_report.unexpected
            self.report.shape_mismatches += sam_report.shape_mismatches
            if self.sam_required:
                self.report.missing += sam_report.missing
            elif sam_report.missing:
                self.report.notes.append(
                    f"{len(sam_report.missing)} SAM tensors not in this checkpoint keep the values from the SAM file"
                )
        self.sam_tensors = {}


def load_state_dict_into(
    model: VisaModel,
    state_dict: Mapping[str, Any],
    name: str = "state dict",
    vision_tower: str = "load",
    sam_required: bool = True,
    strict: bool = True,
) -> LoadReport:
    """Load a complete VISA-layout state dict held in memory (e.g. the golden weights) into ``model``."""
    report = LoadReport(name)
    loader = VisaStateLoader(model, report, model.device, None, vision_tower, sam_required)
    for key, value in state_dict.items():
        loader.add(key, value)
    loader.finish()
    if strict and not report.ok:
        raise VisaCheckpointError("\n".join(report.lines()))
    return report


def load_clip_weights(model: VisaModel, clip_dir: str | pathlib.Path, progress: bool = True) -> LoadReport:
    """Vision tower weights from a CLIP directory (CLIPVisionModel or CLIPModel layout)."""
    clip_dir = pathlib.Path(clip_dir)
    report = LoadReport(f"CLIP ({clip_dir})")
    tower = model.visual.tower.vision_tower
    filler = _ModuleFiller(tower, _clip_message_prefix(tower))
    tower_keys = set(filler.expected)
    device = model.device
    dtype = model.dtype
    files, total = weight_files(clip_dir, error=VisaCheckpointError)
    with _progress(total, "CLIP weights", progress) as bar:
        for path in files:
            for key, value in _file_tensors(path):
                bar.update(1)
                if _CLIP_IGNORED.match(key):
                    report.ignore("text-side CLIP keys")
                elif _CLIP_BUFFERS.search(key):
                    report.ignore("position_ids buffers")
                else:
                    filler.add(clip_tower_key(key, tower_keys), key, _convert(value, device, dtype), report)
    filler.finish(report)
    return report


# ----------------------------------------------------------------------------------------------------------------
# tokenizer and the whole model


def load_visa_tokenizer(visa_dir: str | pathlib.Path):
    """The VISA tokenizer (with [SEG]): 4.31-slow-compatible LLaMA tokenization from ``tokenizer.model`` when
    possible, else ``AutoTokenizer`` (see ``tokenizer.py``); ``pad_token`` = ``unk_token`` as VISA sets it."""
    from .tokenizer import load_tokenizer

    try:
        return load_tokenizer(visa_dir)
    except (ValueError, ImportError) as exc:
        raise VisaCheckpointError(f"tokenizer of {visa_dir}: {exc}") from exc


def load_visa(
    visa_dir: str | pathlib.Path,
    sam_checkpoint: str | pathlib.Path,
    clip_dir: str | pathlib.Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    strict: bool = True,
    progress: bool = True,
) -> tuple[VisaModel, Any, VisaLoadReport]:
    """Build VISA from its three sources (see the module docstring) -> (model in eval mode, tokenizer, report).

    Raises ``VisaCheckpointError`` naming the missing path, or (with ``strict``) listing the key problems."""
    visa_dir, sam_checkpoint, clip_dir = pathlib.Path(visa_dir), pathlib.Path(sam_checkpoint), pathlib.Path(clip_dir)
    _require(visa_dir, "VISA checkpoint directory")
    _require(sam_checkpoint, "SAM checkpoint")
    _require(clip_dir, "CLIP directory")
    dev, dt = resolve_device_dtype(device, dtype)
    raw_config = _read_json(visa_dir / "config.json", "VISA config")
    tokenizer = load_visa_tokenizer(visa_dir)
    try:
        seg_id = seg_token_id(tokenizer)
    except ValueError as exc:
        raise VisaCheckpointError(f"{visa_dir}: {exc}") from exc
    files, total = weight_files(
        visa_dir, error=VisaCheckpointError
    )  # fail early on a missing weight file, before the slow SAM read

    try:
        sam_state = load_sam_checkpoint(sam_checkpoint)
        sam_config = SamConfig.from_state_dict(sam_state)
    except (SamCheckpointError, FileNotFoundError) as exc:
        raise VisaCheckpointError(f"SAM checkpoint {sam_checkpoint}: {exc}") from exc
    config = visa_config(raw_config, clip_config_from_dir(clip_dir), sam_config, seg_id)

    with torch.device(dev):
        model = VisaModel(config, llm_on_meta=True)
    model.visual.to(dtype=dt)
    model.text_hidden_fcs.to(dtype=dt)

    report = VisaLoadReport()
    sam_source = model.sam.load_original_state_dict(sam_state, prefix="", strict=False)
    sam_source.source = f"SAM ({sam_checkpoint})"
    report.sources.append(sam_source)
    del sam_state

    visa_source = LoadReport(f"VISA ({visa_dir})")
    loader = VisaStateLoader(model, visa_source, dev, dt, vision_tower="ignore", sam_required=False)
    with _progress(total, "VISA weights", progress) as bar:
        for path in files:
            bar.set_postfix_str(path.name)
            for key, value in _file_tensors(path):
                loader.add(key, value)
                bar.update(1)
    loader.finish()
    model.sam.to(dtype=dt)
    report.sources.append(visa_source)
    report.sources.append(load_clip_weights(model, clip_dir, progress))
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover and strict:
        visa_source.notes.append(f"{len(leftover)} language-model parameters were never loaded")
    if strict and not report.ok:
        raise VisaCheckpointError("VISA weights do not match the model:\n" + str(report))
    if leftover:
        raise VisaCheckpointError(f"parameters left unloaded (no checkpoint tensor): {leftover[:10]}")
    model.llm.to(dtype=dt)
    model.requires_grad_(False)  # inference only: no autograd bookkeeping
    return model.eval(), tokenizer, report
