"""Golden check ``visa_forward``: VISA's inference forward (visual tokens -> LLaMA -> h_seg -> SAM mask) on a tiny
configuration, against the official code's outputs.

The configuration comes from the case: ``tiny_llama`` / ``tiny_clip`` (case.json), the SAM shape from the weight
keys (``tiny_state_dict_keys.json``), the clustering stage sizes from the stored cluster-index arrays (input token
counts of stages 1 and 2, and the remainder of the 112 tokens for the last stage; k = 5, 3, 3 as in Chat-UniVi).
The official density noise (``ctm_noise_stage*``) is injected, so the cluster assignments must agree exactly.
If a frame the case flags as fragile (tiny decision margin) still clusters differently, its visual tokens are
excluded and the language-model states are compared only before that frame, as the case's tolerance note allows;
a difference on any other frame fails.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from ..golden import Check, GoldenCase, GoldenCaseError, agreement_check, max_abs_check
from ..models.visa.checkpoint import llama_config_from_dict, load_state_dict_into
from ..models.visa.ctm import DEFAULT_STAGES
from ..models.visa.modeling import VisaConfig, VisaModel
from ..models.visa.vision import clip_normalize, clip_resize_crop

FRAGILE_MARGIN = 1e-5  # a decision closer than this may legitimately flip with last-bit differences


def _tolerance(case: GoldenCase, key: str) -> float:
    tolerances = case.spec.get("suggested_tolerances", {})
    if key not in tolerances:
        raise GoldenCaseError(f"case.json suggested_tolerances lacks {key!r}")
    return float(tolerances[key])


def _key_shapes(case: GoldenCase) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    path = case.directory / "tiny_state_dict_keys.json"
    if not path.is_file():
        raise GoldenCaseError(f"{path} is missing (the case's parameter names and shapes)")
    data = json.loads(path.read_text())
    shapes = {name: tuple(shape) for name, shape, *_ in data["keys"]}
    return shapes, list(data.get("constant_buffers_kept_at_construction_value", []))


def _golden_state_dict(case: GoldenCase, llama_config) -> dict[str, np.ndarray]:
    shapes, constants = _key_shapes(case)
    weights = case.weights({k: s for k, s in shapes.items() if k not in constants})
    head_dim = llama_config.hidden_size // llama_config.num_attention_heads
    theta = llama_config.rope_parameters["rope_theta"]
    for key in constants:  # RoPE frequencies keep their constructed values (see case.json construction)
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        if tuple(inv_freq.shape) != shapes[key]:
            raise GoldenCaseError(f"constant buffer {key} has shape {shapes[key]}, expected {tuple(inv_freq.shape)}")
        weights[key] = inv_freq.numpy()
    return weights


def _cluster_stages(case: GoldenCase) -> tuple[tuple[float, int], ...]:
    sizes = []
    for stage in range(len(DEFAULT_STAGES)):
        name = f"idx_cluster_stage{stage}"
        if name not in case.outputs:
            raise GoldenCaseError(f"outputs.npz lacks {name}")
        sizes.append(int(case.outputs[name].shape[1]))
    total = int(case.outputs["clustered_tokens"].shape[1])
    counts = [*sizes[1:], total - sum(sizes[1:])]
    return tuple((float(n), k) for n, (_, k) in zip(counts, DEFAULT_STAGES))


def build_model(case: GoldenCase) -> VisaModel:
    from transformers import CLIPVisionConfig

    from ..models.sam import SamConfig

    llama = llama_config_from_dict(case.spec["tiny_llama"])
    clip = CLIPVisionConfig(**case.spec["tiny_clip"])
    weights = _golden_state_dict(case, llama)
    sam = SamConfig.from_state_dict(weights, prefix="model.visual_model.")
    config = VisaConfig(
        llama=llama,
        clip=clip,
        sam=sam,
        seg_token_id=int(case.spec["seg_token_id"]),
        cluster_stages=_cluster_stages(case),
        out_dim=int(weights["model.text_hidden_fcs.0.2.weight"].shape[0]),
    )
    model = VisaModel(config)
    load_state_dict_into(model, weights, name="golden weights", vision_tower="load", sam_required=True, strict=True)
    return model.eval()


def run(case: GoldenCase) -> list[Check]:
    # The reference ran on one thread. The clustering's torch.cdist uses the matrix-product form, whose near-zero
    # self-distances (part of every token's kNN density) depend on the GEMM's rounding, and multi-threaded BLAS can
    # pick a different kernel from run to run (seen here under load: a different cluster assignment in frame 0).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(case)
    finally:
        torch.set_num_threads(threads)


def _run(case: GoldenCase) -> list[Check]:
    inputs, outputs = case.inputs, case.outputs
    torch.manual_seed(0)
    model = build_model(case)
    checks: list[Check] = []

    frames_u8 = inputs["clip_frames_uint8"]
    num_frames = frames_u8.shape[0]
    target = inputs["target_frame_rgb_uint8"]
    # Our Pillow-exact resize + crop of the raw target frame must give the official CLIP input of the last frame.
    checks.append(
        agreement_check(
            "clip_preprocess(target frame) == frame[-1]",
            clip_resize_crop(target).transpose(2, 0, 1),
            frames_u8[-1],
            1.0,
        )
    )
    pixel_values = clip_normalize(frames_u8)
    if "clip_pixel_values_frame0" in inputs:
        checks.append(
            max_abs_check("clip_pixel_values_frame0", pixel_values[0], inputs["clip_pixel_values_frame0"], 1e-6)
        )

    def noise(frame: int, stage: int, shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
        draws = inputs[f"ctm_noise_stage{stage}"][frame]
        if draws.size != int(np.prod(shape)):
            raise GoldenCaseError(f"ctm_noise_stage{stage} frame {frame} has {draws.size} values, need {tuple(shape)}")
        return torch.from_numpy(draws.astype(np.float32)).reshape(shape)

    with torch.no_grad():
        out = model.encode_prompt(torch.from_numpy(pixel_values), torch.from_numpy(inputs["input_ids"][0]), noise)
    visual = out.visual

    # Cluster assignments, frame by frame.
    margins = outputs.get("ctm_decision_margins")
    assignments = []
    differing: set[int] = set()
    for stage in range(len(visual.traces[0].stages)):
        got = np.stack([t.stages[stage].assignment[0].numpy() for t in visual.traces])
        want = outputs[f"idx_cluster_stage{stage}"].astype(np.int64)
        assignments.append((stage, got, want))
        if got.shape == want.shape:
            differing |= {f for f in range(num_frames) if not np.array_equal(got[f], want[f])}
    fragile = set()
    if margins is not None:
        fragile = {f for f in range(num_frames) if float(np.min(margins[f])) < FRAGILE_MARGIN}
    excused = differing & fragile
    keep = [f for f in range(num_frames) if f not in excused]
    stable = " (stable frames)" if excused else ""
    # A frame whose clustering decision margin is below FRAGILE_MARGIN may cluster differently on another CPU's
    # BLAS kernels; such a frame is excused from every check, and every stage is still compared on the others.
    for stage, got, want in assignments:
        if excused and got.shape == want.shape:
            got, want = got[keep], want[keep]
        checks.append(agreement_check(f"idx_cluster_stage{stage}{stable}", got, want, 1.0))
    if excused:
        checks.append(
            Check(
                "cluster mismatches only on fragile frames",
                float(len(differing - fragile)),
                0.0,
                detail=f"frames {sorted(differing)} differ; fragile (margin < {FRAGILE_MARGIN:g}): {sorted(fragile)}",
            )
        )

    # CLIP features come before any clustering, so every frame is compared; the merged tokens on the stable frames.
    for name, got, frames, label in (
        ("clip_patch_features", visual.patch_features, list(range(num_frames)), ""),
        ("clustered_tokens", visual.clustered, keep, stable),
        ("projected_tokens", visual.projected, keep, stable),
    ):
        want = outputs[name][frames]
        checks.append(max_abs_check(name + label, got.numpy()[frames], want, _tolerance(case, f"{name}_max_abs")))

    layout = out.layout
    checks.append(
        Check(
            "seg_hidden_index",
            float(abs(layout.seg_hidden_index - int(outputs["seg_hidden_index"]))),
            0.0,
            detail=f"got {layout.seg_hidden_index}, expanded length {layout.expanded_length}",
        )
    )
    hidden = out.last_hidden_state.numpy()
    want_hidden = outputs["last_hidden_state"]
    if excused:
        first_frame = min(excused)
        start = layout.image_positions[first_frame] + first_frame * (layout.tokens_per_image - 1)
        checks.append(
            max_abs_check(
                f"last_hidden_state (before frame {first_frame})",
                hidden[:start],
                want_hidden[:start],
                _tolerance(case, "last_hidden_state_max_abs"),
            )
        )
        seg_tol = _tolerance(case, "h_seg_max_abs")
    else:
        checks.append(
            max_abs_check("last_hidden_state", hidden, want_hidden, _tolerance(case, "last_hidden_state_max_abs"))
        )
        seg_tol = _tolerance(case, "last_hidden_state_max_abs")
    checks.append(max_abs_check("seg_hidden", out.seg_hidden.numpy(), outputs["seg_hidden"], seg_tol))
    h_seg_tol = _tolerance(case, "h_seg_max_abs")
    checks.append(max_abs_check("h_seg", out.h_seg.numpy(), outputs["h_seg"], h_seg_tol))
    with torch.no_grad():
        logits = model.logits_at(out.seg_hidden).numpy()
    checks.append(max_abs_check("logits_at_seg_position", logits, outputs["logits_at_seg_position"], h_seg_tol))

    # SAM on the target frame with h_seg as the only sparse prompt.
    original_size = tuple(int(v) for v in inputs["original_size"])
    if tuple(target.shape[:2]) != original_size:
        raise GoldenCaseError(f"target frame is {target.shape[:2]} but original_size is {original_size}")
    with torch.no_grad():
        embeddings, input_size = model.encode_keyframe(target)
        mask = model.decode_mask(embeddings, out.h_seg, input_size, original_size)
        sparse, _ = model.sam.prompt_encoder(out.h_seg.reshape(1, 1, -1))
    checks.append(
        Check(
            "sam input_size",
            float(np.abs(np.asarray(input_size) - inputs["input_size"]).max()),
            0.0,
            detail=f"got {input_size}",
        )
    )
    checks.append(max_abs_check("sparse_embeddings", sparse.numpy(), outputs["sparse_embeddings"], h_seg_tol))
    low_tol = _tolerance(case, "low_res_logits_max_abs")
    checks.append(max_abs_check("low_res_logits", mask.low_res_logits.numpy(), outputs["low_res_logits"], low_tol))
    checks.append(max_abs_check("iou_predictions", mask.iou_predictions.numpy(), outputs["iou_predictions"], low_tol))
    mask_tol = _tolerance(case, "pred_mask_logits_max_abs")
    want_logits = outputs["pred_mask_logits"][0]
    checks.append(
        max_abs_check("pred_mask_logits", mask.mask_logits.numpy()[None], outputs["pred_mask_logits"], mask_tol)
    )
    decided = np.abs(want_logits) > mask_tol  # pixels whose sign cannot flip within the tolerance
    checks.append(
        agreement_check(
            "pred_mask_binary (|logit| > tol)",
            (mask.mask_logits.numpy() > 0)[decided],
            outputs["pred_mask_binary"][0].astype(bool)[decided],
            1.0,
        )
    )
    return checks
