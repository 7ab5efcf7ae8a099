"""Immutable, versioned adapter directories: `<adapters_dir>/<domain>/<domain>-v<N>/`.

Each holds the peft files plus `cowest-adapter.json`: base model, parent version, round, pair count,
content sha256, metrics, created time. A name is never reused. `validate` rejects a corrupt adapter
or one made for another base before it can reach vLLM.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

from pydantic import BaseModel, Field

from shared.adapters import versioned_name
from shared.domains import NAME_PATTERN
from shared.failpoints import failpoint
from shared.knowledge import Knowledge

logger = logging.getLogger(__name__)
MANIFEST = "cowest-adapter.json"
KNOWLEDGE = "knowledge.json"  # a version's knowledge (shared/knowledge.py), published with it
DESIRED_DIR = ".desired"  # in the served-adapters dir; services/weak_server/ready.py reads it (same name)
CONTENT_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterError(ValueError):
    pass


class AdapterManifest(BaseModel):
    name: str
    domain: str
    version: int
    base_model: str  # the served name of the base model
    base_model_path: str
    parent: str | None = None
    round: int | None = None
    pairs: int | None = None
    kind: str = "dpo"  # sft | dpo
    sha256: str
    metrics: dict[str, float] = Field(default_factory=dict)
    created: float = Field(default_factory=time.time)
    # The knowledge this version was trained to look up in (`knowledge.json` beside the weights): its sha256,
    # how many statements, and where they came from. None: a version without lookup.
    knowledge_sha256: str | None = None
    knowledge_facts: int | None = None
    knowledge_source: str | None = None


def content_sha256(path: Path) -> str:
    contents = {}
    for name in CONTENT_FILES:
        file = path / name
        if not file.is_file():
            raise AdapterError(f"{path} has no {name}")
        contents[name] = file.read_bytes()
    return _sha256_of(contents)


def _sha256_of(contents: dict[str, bytes]) -> str:
    """The content hash of an adapter: each content file's name and bytes, in CONTENT_FILES order."""
    digest = hashlib.sha256()
    for name in CONTENT_FILES:
        digest.update(name.encode())
        digest.update(contents[name])
    return digest.hexdigest()


def _write_atomically(path: Path, text: str, crash_point: str | None = "registry.manifest_write") -> None:
    """Write-new + fsync + rename: a crash leaves the old file or the new one, never a torn one. `crash_point`:
    the failpoint between the write and the rename (the chaos tests kill the trainer there, in a manifest write)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    if crash_point:
        failpoint(crash_point)
    os.replace(tmp, path)


class AdapterRegistry:
    def __init__(self, root: Path):
        self.root = root

    def domain_dir(self, domain: str) -> Path:
        if not re.fullmatch(NAME_PATTERN, domain):
            raise AdapterError(f"{domain!r} is not a domain name")
        return self.root / domain

    def versions(self, domain: str) -> list[AdapterManifest]:
        manifests = []
        for path in sorted(self.domain_dir(domain).glob(f"{domain}-v*/{MANIFEST}")):
            try:
                manifests.append(AdapterManifest.model_validate_json(path.read_text()))
            except ValueError:
                logger.error("skipping %s: unreadable manifest", path)
        return sorted(manifests, key=lambda m: m.version)

    def domains(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.exists() else []

    def path(self, name: str) -> Path:
        """The version's directory, always inside the registry root: the name (from an API call or a Redis
        history entry) must be `<domain>-v<N>` with a valid domain name, so `..`, `/abs` or `a:b` never reach
        the filesystem."""
        match = re.fullmatch(r"(.+)-v(\d+)", name)
        if not match or not re.fullmatch(NAME_PATTERN, match.group(1)):
            raise AdapterError(f"{name!r} is not a versioned adapter name (<domain>-v<N>)")
        path = self.domain_dir(match.group(1)) / name
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise AdapterError(f"{name!r} resolves outside the adapter registry")
        return path

    def get(self, name: str) -> AdapterManifest:
        manifest = self.path(name) / MANIFEST
        if not manifest.is_file():
            raise AdapterError(f"no adapter {name!r} in {self.root}")
        try:
            return AdapterManifest.model_validate_json(manifest.read_text())
        except ValueError as exc:  # a torn or edited manifest: this version is unusable, not the trainer
            raise AdapterError(f"{name}: unreadable manifest ({exc.__class__.__name__})") from exc

    def next_version(self, domain: str) -> int:
        # Directories without a manifest count too: a name is never reused, even after a failed write.
        taken = [
            int(m.group(1))
            for p in self.domain_dir(domain).glob(f"{domain}-v*")
            if (m := re.fullmatch(rf"{re.escape(domain)}-v(\d+)", p.name))
        ]
        return max(taken, default=0) + 1

    def register(
        self,
        trained_dir: Path,
        *,
        domain: str,
        base_model: str,
        base_model_path: Path,
        parent: str | None,
        round: int | None,
        pairs: int | None,
        kind: str,
        metrics: dict[str, float] | None = None,
        knowledge: Knowledge | None = None,
    ) -> AdapterManifest:
        """Move a freshly trained adapter into the registry under the next version name, with the knowledge it
        was trained to look up in (a DPO version inherits its parent's)."""
        version = self.next_version(domain)
        name = versioned_name(domain, version)
        target = self.domain_dir(domain) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{name}.staging")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(trained_dir, staging)
        if knowledge is not None:
            _write_atomically(staging / KNOWLEDGE, knowledge.to_json(), crash_point=None)
        manifest = AdapterManifest(
            name=name,
            domain=domain,
            version=version,
            base_model=base_model,
            base_model_path=str(base_model_path),
            parent=parent,
            round=round,
            pairs=pairs,
            kind=kind,
            sha256=content_sha256(staging),
            metrics=metrics or {},
            knowledge_sha256=knowledge.sha256 if knowledge else None,
            knowledge_facts=len(knowledge.facts) if knowledge else None,
            knowledge_source=knowledge.source if knowledge else None,
        )
        _write_atomically(staging / MANIFEST, manifest.model_dump_json(indent=2))
        os.replace(staging, target)
        return manifest

    def publish(self, name: str, served_dir: Path, served_base: str) -> Path:
        """The version as vLLM's filesystem LoRA resolver reads it: `<served_dir>/<name>/`, a flat copy whose
        adapter_config.json names the base model as the weak servers were started with it (the resolver serves
        an adapter only when `base_model_name_or_path` equals the model argument of `vllm serve`, a path; the
        training job's own path may differ). Written new + renamed: a replica never reads half of one. A copy
        already there is kept only when its content hash is the one this registry's version gives: a stale copy
        (an earlier registry's version of the same name) or an edited one is replaced, never served."""
        target = served_dir / self.path(name).name
        config = json.loads((self.path(name) / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = served_base
        served_config = json.dumps(config, indent=2)
        expected = _sha256_of(
            {
                "adapter_config.json": served_config.encode(),
                **{f: (self.path(name) / f).read_bytes() for f in CONTENT_FILES[1:]},
            }
        )
        if target.is_dir():
            try:
                if content_sha256(target) == expected:
                    return target
            except AdapterError:
                pass  # a file missing: replaced below
            logger.warning("the published copy of %s does not match the registry's version: replacing it", name)
        served_dir.mkdir(parents=True, exist_ok=True)
        staging = served_dir / f".{name}.staging"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(self.path(name), staging)
        (staging / "adapter_config.json").write_text(served_config)
        if target.is_dir():
            old = served_dir / f".{name}.replaced"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
        return target

    @staticmethod
    def publish_desired(served_dir: Path, domain: str, names: list[str]) -> None:
        """The versions of `domain` every weak replica must hold (`<served_dir>/.desired/<domain>.json`): what a
        replica's readiness check (services/weak_server/ready.py) loads before it takes traffic."""
        target = served_dir / DESIRED_DIR / f"{domain}.json"
        text = json.dumps(sorted(names))
        with contextlib.suppress(OSError):
            if target.read_text() == text:  # the reconcile loop asks every 10 s: no fsync when nothing changed
                return
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(target, text, crash_point=None)  # not a manifest

    def knowledge(self, name: str) -> Knowledge | None:
        """The knowledge version `name` looks up in; None for a version without one. A file whose content does not
        match the manifest's sha256 is refused (a stale or edited copy must not be served)."""
        manifest, file = self.get(name), self.path(name) / KNOWLEDGE
        if manifest.knowledge_sha256 is None:
            return None
        try:
            knowledge = Knowledge.from_json(file.read_text())
        except (OSError, ValueError, KeyError) as exc:
            raise AdapterError(f"{name}: unreadable knowledge file ({exc.__class__.__name__})") from exc
        if knowledge.sha256 != manifest.knowledge_sha256:
            raise AdapterError(f"{name}: its knowledge does not match the manifest's sha256")
        return knowledge

    def update_metrics(self, name: str, metrics: dict[str, float]) -> AdapterManifest:
        manifest = self.get(name)
        manifest.metrics.update(metrics)
        _write_atomically(self.path(name) / MANIFEST, manifest.model_dump_json(indent=2))
        return manifest

    def validate(self, name: str, *, base_model_path: Path, max_rank: int) -> AdapterManifest:
        """Reject what must not reach traffic: altered files, another base model, a rank vLLM cannot load."""
        manifest = self.get(name)
        path = self.path(name)
        if content_sha256(path) != manifest.sha256:
            raise AdapterError(f"{name}: content does not match its manifest sha256 (corrupt or altered)")
        try:
            config = json.loads((path / "adapter_config.json").read_text())
        except ValueError as exc:
            raise AdapterError(f"{name}: adapter_config.json is not valid JSON") from exc
        base = config.get("base_model_name_or_path")
        if not base or Path(base).resolve() != base_model_path.resolve():
            raise AdapterError(f"{name}: trained on {base!r}, but the weak server serves {str(base_model_path)!r}")
        if int(config.get("r", 0)) > max_rank:
            raise AdapterError(f"{name}: rank {config.get('r')} exceeds the server's --max-lora-rank {max_rank}")
        return manifest
