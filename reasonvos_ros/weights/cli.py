"""``reasonvos weights``: list the supported model sets, download one, verify it, write a ready params file.

    reasonvos weights list [--json]            every set: repositories, parameters, sizes, licences, GPU memory
    reasonvos weights download SET --dir DIR   fetch with huggingface_hub, verify against the hub's checksums,
                                               write DIR/reasonvos_weights.json and DIR/<SET>.params.yaml
    reasonvos weights verify SET --dir DIR     re-check the files (hub checksums online; the recorded ones offline)
    reasonvos weights params SET --dir DIR     only write the params file (files fetched by other means)

Offline (``HF_HUB_OFFLINE=1``, or the hub not reachable within 3 s) ``download`` prints exactly what to fetch and
where, and exits with status 2 at once: nothing waits on the network. Exit status 1 means a check failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import socket
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from .catalog import MODEL_SETS, Component, ModelSet, find_set, memory_estimate, parameter_count

MANIFEST = "reasonvos_weights.json"
EXIT_CHECK_FAILED = 1
EXIT_OFFLINE = 2


def component_dir(root: Path, component: Component) -> Path:
    return root / component.repo_id.replace("/", "--")


def hub_reachable(timeout_s: float = 3.0) -> tuple[bool, str]:
    """(reachable, why not). Honours HF_HUB_OFFLINE and HF_ENDPOINT; never waits longer than ``timeout_s``."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False, "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urllib.parse.urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True, ""
    except OSError as exc:
        return False, f"{host}:{port} not reachable ({exc})"


def describe(model_set: ModelSet) -> dict[str, Any]:
    components = []
    for component in model_set.components:
        params = parameter_count(component)
        bytes_per = {"bfloat16": 2, "float16": 2, "float32": 4}[component.stored_dtype]
        components.append(
            {
                "role": component.role,
                "repo_id": component.repo_id,
                "revision": component.revision,
                "revision_pinned": component.revision != "main",
                "model_class": component.model_class,
                "option": component.option,
                "parameters": params,
                "card_parameters_b": component.card_params_b,
                "size_estimate_gb": params * bytes_per / 1e9 if params is not None else None,
                "size_verified": False,
                "stored_dtype": component.stored_dtype,
                "licence_per_card": component.card_licence,
                "gated_per_card": component.card_gated,
                "note": component.note,
            }
        )
    return {
        "name": model_set.name,
        "summary": model_set.summary,
        "backend": f"{model_set.backend_role}: {model_set.backend}",
        "downloadable": model_set.downloadable,
        "components": components,
        "gpu_memory_bf16_gib": memory_estimate(model_set) if model_set.components else None,
        "note": model_set.note,
    }


def print_list(as_json: bool) -> int:
    described = [describe(s) for s in MODEL_SETS]
    if as_json:
        print(json.dumps(described, indent=2))
        return 0
    print("Supported model sets (parameters exact, computed from the architectures; sizes are ESTIMATES from the")
    print("parameter counts and stored dtype, revisions 'main' are NOT pinned, licence/gating as the model cards")
    print("stated when written -- `reasonvos weights verify` checks sizes and checksums against the hub).\n")
    for entry in described:
        print(f"{entry['name']}  [{entry['backend']}]")
        print(f"    {entry['summary']}")
        for c in entry["components"]:
            gated = "gated" if c["gated_per_card"] else "not gated"
            if c["parameters"] is None:
                size = "parameters not counted here"
            else:
                size = (
                    f"{c['parameters'] / 1e9:.3f} B params  ~{c['size_estimate_gb']:.2f} GB ({c['stored_dtype']}, "
                    "estimate)"
                )
            print(
                f"    - {c['role']:<4} {c['repo_id']}@{c['revision']}  {c['model_class']}  {size}  "
                f"licence: {c['licence_per_card']}  {gated}  -> option {c['option']}"
            )
            if c["note"]:
                print(f"           {c['note']}")
        memory = entry["gpu_memory_bf16_gib"]
        if memory:
            kv = f" + KV cache of a typical prompt {memory['kv_cache_gib']:.2f} GiB" if memory["kv_cache_gib"] else ""
            print(
                f"    GPU memory in bf16: weights {memory['weights_gib']:.1f} GiB{kv} = {memory['total_gib']:.1f} GiB, "
                "plus activations and the CUDA context (measure: benchmarks/gpu_stages.py)"
            )
        if entry["note"]:
            print(f"    NOTE: {entry['note']}")
        print()
    return 0


def fetch_plan(model_set: ModelSet, root: Path) -> str:
    lines = [f"To use {model_set.name}, put these repositories under {root} (any machine with internet access):"]
    for component in model_set.components:
        patterns = "--include " + " ".join(f"'{p}'" for p in component.allow_patterns)
        lines.append(
            f"  hf download {component.repo_id} --revision {component.revision} "
            f"--local-dir {component_dir(root, component)} {patterns}"
        )
        if component.card_gated:
            lines.append(f"    ({component.repo_id} is gated: accept its licence on the hub and `hf auth login` first)")
    lines.append(f"then copy {root} to the robot and run: reasonvos weights params {model_set.name} --dir {root}")
    return "\n".join(lines)


def params_document(model_set: ModelSet, root: Path, device: str, dtype: str) -> dict[str, Any]:
    options = {c.option: str(component_dir(root.resolve(), c)) for c in model_set.components}
    options.update(model_set.options)
    options.update({"device": device, "dtype": dtype})
    # "/**" (any node name in any namespace), like config/perception.yaml: a namespaced launch still applies it.
    return {
        "/**": {
            "ros__parameters": {
                model_set.backend_role: model_set.backend,
                f"{model_set.backend_role}_options": json.dumps(options),
            }
        }
    }


def write_params(model_set: ModelSet, root: Path, out: Path | None, device: str, dtype: str) -> Path:
    import yaml

    missing = [
        str(component_dir(root, c))
        for c in model_set.components
        if not (component_dir(root, c) / "config.json").is_file()
    ]
    if missing:
        raise FileNotFoundError("no config.json in " + ", ".join(missing) + "\n" + fetch_plan(model_set, root))
    out = out or root / f"{model_set.name}.params.yaml"
    header = (
        f"# reasonvos_ros parameters for the model set {model_set.name} (written by `reasonvos weights`).\n"
        "# Use with: reasonvos_perception_node --ros-args --params-file config/perception.yaml --params-file THIS\n"
    )
    out.write_text(header + yaml.safe_dump(params_document(model_set, root, device, dtype), sort_keys=False))
    return out


def file_digests(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file: the hub lists the first for LFS files and the second for the others."""
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(chunk)
            blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest()


def verify_against_hub(component: Component, directory: Path, revision: str) -> tuple[list[str], dict[str, Any]]:
    """Compare local files with the hub's listing of ``revision``: (problems, record for the manifest)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(component.repo_id, revision=revision, files_metadata=True)
    problems, files = [], {}
    for sibling in info.siblings or []:
        name = sibling.rfilename
        if not any(fnmatch.fnmatch(name, p) for p in component.allow_patterns):
            continue
        local = directory / name
        if not local.is_file():
            problems.append(f"{component.repo_id}: {name} missing")
            continue
        sha256, blob = file_digests(local)
        lfs = sibling.lfs
        expected_sha256 = (
            (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
        )
        if expected_sha256 and sha256 != expected_sha256:
            problems.append(f"{component.repo_id}: {name} sha256 {sha256[:12]} != hub {expected_sha256[:12]}")
        elif not expected_sha256 and sibling.blob_id and blob != sibling.blob_id:
            problems.append(f"{component.repo_id}: {name} git id {blob[:12]} != hub {sibling.blob_id[:12]}")
        if sibling.size is not None and local.stat().st_size != sibling.size:
            problems.append(f"{component.repo_id}: {name} has {local.stat().st_size} bytes, hub {sibling.size}")
        files[name] = {"size": local.stat().st_size, "sha256": sha256}
    if not files:
        problems.append(f"{component.repo_id}@{revision}: the hub lists no file matching {component.allow_patterns}")
    return problems, {"repo_id": component.repo_id, "commit": info.sha, "files": files}


def verify_offline(model_set: ModelSet, root: Path) -> list[str]:
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        return [f"offline and no {manifest_path} (written by an online download): nothing to verify against"]
    manifest = json.loads(manifest_path.read_text())
    problems = []
    for record in manifest.get("components", []):
        directory = root / record["repo_id"].replace("/", "--")
        for name, expected in record["files"].items():
            local = directory / name
            if not local.is_file():
                problems.append(f"{record['repo_id']}: {name} missing")
            elif file_digests(local)[0] != expected["sha256"]:
                problems.append(f"{record['repo_id']}: {name} differs from the sha256 recorded at download")
    return problems


def recorded_commit(root: Path, component: Component) -> str:
    manifest_path = root / MANIFEST
    if manifest_path.is_file():
        for record in json.loads(manifest_path.read_text()).get("components", []):
            if record.get("repo_id") == component.repo_id and record.get("commit"):
                return record["commit"]
    return component.revision


def download(model_set: ModelSet, root: Path, args) -> int:
    if not model_set.downloadable:
        print(f"{model_set.name} cannot be downloaded by this tool.\n{model_set.note}", file=sys.stderr)
        return EXIT_CHECK_FAILED
    online, why = hub_reachable()
    if not online:
        print(f"offline ({why}): nothing downloaded.\n{fetch_plan(model_set, root)}", file=sys.stderr)
        return EXIT_OFFLINE
    from huggingface_hub import snapshot_download

    root.mkdir(parents=True, exist_ok=True)
    records, problems = [], []
    for component in model_set.components:
        target = component_dir(root, component)
        print(f"downloading {component.repo_id}@{component.revision} -> {target}", flush=True)
        try:
            snapshot_download(
                component.repo_id,
                revision=component.revision,
                local_dir=str(target),
                allow_patterns=list(component.allow_patterns),
            )
            found, record = verify_against_hub(component, target, component.revision)
        except Exception as exc:
            hint = " (gated: accept the licence on the hub, then `hf auth login`)" if component.card_gated else ""
            print(f"{component.repo_id}: download failed{hint}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_CHECK_FAILED
        problems += found
        records.append(record)
    (root / MANIFEST).write_text(json.dumps({"set": model_set.name, "components": records}, indent=2))
    if problems:
        print("verification FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return EXIT_CHECK_FAILED
    print(f"verified {sum(len(r['files']) for r in records)} files against the hub's checksums")
    out = write_params(model_set, root, args.params_out, args.device, args.dtype)
    print(f"wrote {out}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="weights_command", required=True)
    listing = sub.add_parser("list", help="list the supported model sets")
    listing.add_argument("--json", action="store_true")
    for name, text in (
        ("download", "download a set with huggingface_hub, verify it, write the params file"),
        ("verify", "verify a downloaded set (hub checksums online, recorded ones offline)"),
        ("params", "write the params file for a set already on disk"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("set", help="model set name (see `reasonvos weights list`)")
        command.add_argument("--dir", required=True, type=Path, help="directory holding the set's repositories")
        command.add_argument("--params-out", type=Path, default=None, help="params file (default DIR/SET.params.yaml)")
        command.add_argument("--device", default="cuda")
        command.add_argument("--dtype", default="bfloat16")


def run(args: argparse.Namespace) -> int:
    if args.weights_command == "list":
        return print_list(args.json)
    try:
        model_set = find_set(args.set)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return EXIT_CHECK_FAILED
    root = args.dir.expanduser()
    if args.weights_command == "download":
        return download(model_set, root, args)
    if not model_set.downloadable:
        print(model_set.note, file=sys.stderr)
        return EXIT_CHECK_FAILED
    if args.weights_command == "params":
        try:
            print(f"wrote {write_params(model_set, root, args.params_out, args.device, args.dtype)}")
        except FileNotFoundError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_CHECK_FAILED
        return 0
    online, why = hub_reachable()
    if online:
        problems = []
        for component in model_set.components:
            directory, revision = component_dir(root, component), recorded_commit(root, component)
            try:
                found, _ = verify_against_hub(component, directory, revision)
            except Exception as exc:
                found = [f"{component.repo_id}: cannot read the hub's listing: {type(exc).__name__}: {exc}"]
            problems += found
        source = "the hub's checksums"
    else:
        problems = verify_offline(model_set, root)
        source = f"the checksums recorded at download (offline: {why})"
    if problems:
        print(f"verification against {source} FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return EXIT_CHECK_FAILED
    print(f"{model_set.name}: every file matches {source}")
    return 0
