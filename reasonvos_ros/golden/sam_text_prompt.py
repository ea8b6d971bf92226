"""Golden runner for ``sam_text_prompt`` cases: VISA's SAM with a text-embedding prompt vs the official outputs.

The model is built from the case's ``state_dict_keys`` shapes (cross-checked against ``case.json -> encoder``) and
loaded with the case's deterministic weights through the real original-layout loader (strict). It runs the stored
``resized_rgb_uint8`` through normalise/pad, encoder, text prompt, decoder and post-processing, and compares every
stored output at the case's ``suggested_tolerances``. It also checks that this package's own preprocessing of
``frame_rgb_uint8`` (Pillow-exact resize) reproduces the stored resized image, input size and pixel values.
"""

from __future__ import annotations

import numpy as np
import torch

from . import Check, GoldenCase, GoldenCaseError, agreement_check, max_abs_check


def _tolerance(spec: dict, name: str) -> float:
    tolerances = spec.get("suggested_tolerances", {})
    if f"{name}_max_abs" in tolerances:
        return float(tolerances[f"{name}_max_abs"])
    if "others_max_abs" in tolerances:
        return float(tolerances["others_max_abs"])
    raise GoldenCaseError(f"case.json suggested_tolerances has neither {name}_max_abs nor others_max_abs")


def _require(mapping: dict, names: tuple[str, ...], where: str) -> None:
    missing = [n for n in names if n not in mapping]
    if missing:
        raise GoldenCaseError(f"{where} lacks {', '.join(missing)}")


def run(case: GoldenCase) -> list[Check]:
    from reasonvos_ros.models.sam import SamCheckpointError, SamConfig, SamTextPromptModel
    from reasonvos_ros.models.sam.preprocess import longest_side_size, normalize_and_pad, resize_bilinear_like_pillow

    spec = case.spec
    _require(spec, ("state_dict_keys",), "case.json")
    _require(
        case.inputs,
        ("frame_rgb_uint8", "resized_rgb_uint8", "text_embeds", "original_size", "input_size"),
        "inputs.npz",
    )
    shapes = {key: tuple(int(s) for s in shape) for key, shape, *_ in spec["state_dict_keys"]}
    try:
        config = SamConfig.from_state_dict(shapes)
    except SamCheckpointError as exc:
        raise GoldenCaseError(f"case.json state_dict_keys do not describe a SAM model: {exc}") from exc
    declared = spec.get("encoder", {})
    inferred = {
        "encoder_embed_dim": config.encoder_embed_dim,
        "encoder_depth": config.encoder_depth,
        "encoder_num_heads": config.encoder_num_heads,
        "encoder_global_attn_indexes": list(config.encoder_global_attn_indexes),
    }
    conflicts = {k: (v, inferred[k]) for k, v in declared.items() if k in inferred and v != inferred[k]}
    if conflicts:
        raise GoldenCaseError(f"case.json encoder settings contradict the key shapes (declared, inferred): {conflicts}")

    try:
        # the real loader, strict: every key of the case must map onto the model and nothing may be left over
        model = SamTextPromptModel.from_original_state_dict(case.weights(shapes), strict=True)
    except SamCheckpointError as exc:
        raise GoldenCaseError(f"golden weights do not load into SamTextPromptModel: {exc}") from exc

    frame = case.inputs["frame_rgb_uint8"]
    resized = case.inputs["resized_rgb_uint8"]
    original_size = tuple(int(v) for v in case.inputs["original_size"])
    input_size = tuple(int(v) for v in case.inputs["input_size"])
    text_embeds = torch.from_numpy(case.inputs["text_embeds"].astype(np.float32))
    others = _tolerance(spec, "others")
    checks: list[Check] = []

    # This package's preprocessing, from the raw frame, against what the official code produced.
    own_size = longest_side_size(frame.shape[0], frame.shape[1], config.image_size)
    checks.append(max_abs_check("preprocess.input_size", own_size, input_size, 0.0))
    if own_size == resized.shape[:2]:
        own_resized = resize_bilinear_like_pillow(frame, *own_size)
        checks.append(
            max_abs_check("preprocess.resized_rgb_uint8", own_resized.astype(np.int16), resized.astype(np.int16), 0.0)
        )
    else:
        checks.append(max_abs_check("preprocess.resized_rgb_uint8", own_size, resized.shape[:2], 0.0))
    pixel_values = normalize_and_pad(resized, config.image_size)
    own_pixels, _ = model.preprocess(frame)
    checks.append(max_abs_check("preprocess.pixel_values", own_pixels, pixel_values, others))

    with torch.no_grad():
        image_embeddings = model.encode_image(pixel_values)
        sparse, dense = model.prompt_encoder(text_embeds)
        dense_pe = model.prompt_encoder.get_dense_pe()
        low_res, iou = model.decode(image_embeddings, text_embeds)
        masks_logits = model.postprocess_masks(low_res, input_size, original_size)

    produced = {
        "image_embeddings": image_embeddings,
        "sparse_embeddings": sparse,
        "dense_embeddings": dense,
        "low_res_logits": low_res,
        "iou_predictions": iou,
        "masks_logits": masks_logits,
        "dense_pe_corner": dense_pe[0, :, :2, :2],
    }
    for name, value in produced.items():
        if name in case.outputs:
            checks.append(max_abs_check(name, value.detach().numpy(), case.outputs[name], _tolerance(spec, name)))
    if "masks_binary" in case.outputs:
        # Pixels whose reference logit lies within the logit tolerance of 0 may flip; all others must agree.
        want = case.outputs["masks_binary"].astype(bool)
        got = masks_logits.numpy() > 0
        if "masks_logits" in case.outputs and got.shape == want.shape:
            confident = np.abs(case.outputs["masks_logits"]) >= _tolerance(spec, "masks_logits")
            checks.append(
                agreement_check("masks_binary (where |ref logit| >= tol)", got[confident], want[confident], 1.0)
            )
        else:
            checks.append(agreement_check("masks_binary", got, want, 1.0))
    missing = [n for n in case.outputs if n not in produced and n != "masks_binary"]
    if missing:
        raise GoldenCaseError(f"outputs.npz has outputs this runner does not produce: {', '.join(missing)}")
    return checks
