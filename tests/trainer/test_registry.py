"""Versioned adapter registry: immutable names, manifests, and rejection of bad adapters."""

from __future__ import annotations

import json

import pytest

from services.trainer.registry import AdapterError, AdapterRegistry, content_sha256


def fake_adapter(path, base, rank=8):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base), "r": rank}))
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    return path


def register(reg, tmp_path, base, name="t", **kw):
    return reg.register(
        fake_adapter(tmp_path / name, base, **kw),
        domain="d",
        base_model="m",
        base_model_path=base,
        parent=None,
        round=1,
        pairs=3,
        kind="dpo",
    )


def test_versions_increase_and_are_never_reused(tmp_path):
    base = tmp_path / "base"
    reg = AdapterRegistry(tmp_path / "adapters")
    assert register(reg, tmp_path, base, "a").name == "d-v1"
    assert register(reg, tmp_path, base, "b").name == "d-v2"
    (tmp_path / "adapters" / "d" / "d-v3").mkdir()  # a half-written version still takes its number
    assert register(reg, tmp_path, base, "c").name == "d-v4"
    m = reg.get("d-v2")
    assert (m.version, m.round, m.pairs, m.sha256) == (2, 1, 3, content_sha256(reg.path("d-v2")))
    assert [v.name for v in reg.versions("d")] == ["d-v1", "d-v2", "d-v4"]


def test_validate_rejects_corrupt_wrong_base_and_rank(tmp_path):
    base = tmp_path / "base"
    reg = AdapterRegistry(tmp_path / "adapters")
    register(reg, tmp_path, base, "a")
    assert reg.validate("d-v1", base_model_path=base, max_rank=16).name == "d-v1"
    with pytest.raises(AdapterError, match="trained on"):
        reg.validate("d-v1", base_model_path=tmp_path / "other-base", max_rank=16)
    with pytest.raises(AdapterError, match="exceeds"):
        reg.validate("d-v1", base_model_path=base, max_rank=4)
    (reg.path("d-v1") / "adapter_model.safetensors").write_bytes(b"tampered")
    with pytest.raises(AdapterError, match="corrupt"):
        reg.validate("d-v1", base_model_path=base, max_rank=16)
    with pytest.raises(AdapterError, match="no adapter"):
        reg.get("d-v9")
    with pytest.raises(AdapterError, match="not a versioned"):
        reg.path("latest")


def test_publish_writes_a_flat_copy_naming_the_served_base_and_leaves_the_version_intact(tmp_path):
    base = tmp_path / "base"
    reg = AdapterRegistry(tmp_path / "adapters")
    name = register(reg, tmp_path, base, "a").name
    served = reg.publish(name, tmp_path / "served", "/models/tiny-weak")
    assert served == tmp_path / "served" / name
    assert json.loads((served / "adapter_config.json").read_text())["base_model_name_or_path"] == "/models/tiny-weak"
    assert (served / "adapter_model.safetensors").read_bytes() == b"weights"
    reg.validate(name, base_model_path=base, max_rank=16)  # the registry's own copy still matches its sha256
    assert reg.publish(name, tmp_path / "served", "/models/tiny-weak") == served  # once: never rewritten under readers
    assert not list((tmp_path / "served").glob(".*"))  # no staging left behind


def test_a_stale_or_edited_published_copy_is_replaced_not_served(tmp_path):
    """Issue 20, defect 14: a copy already in the served directory under the version's name (left by an earlier
    registry, or edited) is checked against the registry's content hash and replaced; a matching one is kept."""
    base = tmp_path / "base"
    reg = AdapterRegistry(tmp_path / "adapters")
    name = register(reg, tmp_path, base, "a").name
    served = reg.publish(name, tmp_path / "served", "/models/tiny-weak")
    mtime = (served / "adapter_model.safetensors").stat().st_mtime_ns
    assert reg.publish(name, tmp_path / "served", "/models/tiny-weak") == served
    assert (served / "adapter_model.safetensors").stat().st_mtime_ns == mtime  # a matching copy is left alone
    (served / "adapter_model.safetensors").write_bytes(b"an earlier registry's weights")
    reg.publish(name, tmp_path / "served", "/models/tiny-weak")
    assert (served / "adapter_model.safetensors").read_bytes() == b"weights"
    (served / "adapter_config.json").unlink()
    reg.publish(name, tmp_path / "served", "/models/tiny-weak")
    assert json.loads((served / "adapter_config.json").read_text())["base_model_name_or_path"] == "/models/tiny-weak"
    assert not list((tmp_path / "served").glob(".*"))  # nothing left beside it


def test_a_version_keeps_the_knowledge_it_was_trained_on_and_refuses_an_edited_copy(tmp_path):
    from shared.knowledge import Knowledge

    base, reg = tmp_path / "base", AdapterRegistry(tmp_path / "adapters")
    knowledge = Knowledge(("The Orla reservoir holds 120 ML.", "The Zeel plant opened in 1999."), "file")
    m = reg.register(
        fake_adapter(tmp_path / "k", base),
        domain="d",
        base_model="m",
        base_model_path=base,
        parent=None,
        round=0,
        pairs=None,
        kind="sft",
        knowledge=knowledge,
    )
    assert (m.knowledge_sha256, m.knowledge_facts, m.knowledge_source) == (knowledge.sha256, 2, "file")
    assert reg.knowledge(m.name) == knowledge
    assert reg.knowledge(register(reg, tmp_path, base, "plain").name) is None  # a version without lookup
    (reg.path(m.name) / "knowledge.json").write_text(Knowledge(("The Orla reservoir holds 95 ML.",)).to_json())
    with pytest.raises(AdapterError, match="does not match"):
        reg.knowledge(m.name)
