"""The plugin's replacement ops against an explicit per-row reference (torch only, no vLLM)."""

from __future__ import annotations

import torch

from services.weak_server.cpu_plugin import lora_ops as fix


def _weights(slots=3, out=6, inp=5):
    torch.manual_seed(0)
    return torch.randn(slots, 1, out, inp)  # vLLM's stacked layout: (slot, 1, out, in)


def _reference(inputs, weights, indices):
    """Row r gets weights[indices[r]] @ inputs[r], and nothing when indices[r] == -1."""
    rows = []
    for x, idx in zip(inputs, indices.tolist(), strict=True):
        rows.append(torch.zeros(weights.shape[2]) if idx < 0 else weights[idx, 0] @ x)
    return torch.stack(rows)


def test_shrink_gives_base_rows_nothing():
    weights, indices = _weights(), torch.tensor([0, -1, 2, -1, 1])
    inputs = torch.randn(5, 5)
    out = torch.full((5, 6), 99.0)
    fix.bgmv_shrink(inputs, weights, out, indices, scaling=0.5)
    torch.testing.assert_close(out, 0.5 * _reference(inputs, weights, indices))


def test_expand_adds_only_to_adapter_rows():
    weights, indices = _weights(), torch.tensor([-1, 1, -1, 2])
    inputs, base = torch.randn(4, 5), torch.randn(4, 6)
    out = base.clone()
    fix.bgmv_expand(inputs, weights, out, indices, add_inputs=True)
    torch.testing.assert_close(out, base + _reference(inputs, weights, indices))
    assert torch.equal(out[0], base[0]) and torch.equal(out[2], base[2])


def test_expand_slice_touches_only_its_slice():
    weights, indices = _weights(), torch.tensor([2, -1, 0])
    inputs, base = torch.randn(3, 5), torch.randn(3, 10)
    out = base.clone()
    fix.bgmv_expand_slice(inputs, weights, out, indices, slice_offset=2, slice_size=6, add_inputs=True)
    expected = base.clone()
    expected[:, 2:8] += _reference(inputs, weights, indices)
    torch.testing.assert_close(out, expected)


def test_one_adapter_batch_takes_the_single_matmul_path():
    weights, indices = _weights(), torch.full((7,), 1)
    inputs = torch.randn(7, 5)
    out = torch.zeros(7, 6)
    fix.bgmv_shrink(inputs, weights, out, indices)
    torch.testing.assert_close(out, _reference(inputs, weights, indices))


def test_prefill_sized_mixed_batch_matches_the_per_row_reference():
    """Prompts of three adapters and the base model, interleaved as vLLM packs a batch's tokens."""
    weights = _weights(slots=4, out=6, inp=5)
    indices = torch.tensor([2, -1, 0, 2, 3, -1]).repeat_interleave(torch.tensor([40, 7, 33, 1, 12, 25]))
    inputs, base = torch.randn(len(indices), 5), torch.randn(len(indices), 6)
    out = base.clone()
    fix.bgmv_expand(inputs, weights, out, indices, add_inputs=True)
    torch.testing.assert_close(out, base + _reference(inputs, weights, indices))


def test_upstream_indexing_is_what_goes_wrong():
    """The bug in one line: index -1 selects the last adapter slot instead of no adapter."""
    weights = _weights()
    assert torch.equal(weights[torch.tensor([-1])][0], weights[2])
