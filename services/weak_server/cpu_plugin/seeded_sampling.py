"""A request with a `seed` must not kill the engine on the CPU.

When vLLM discards a partial-prefill sample it rewinds the request's generator with `set_offset`, which
only CUDA (Philox) generators have: on the CPU it raises "CPU Generator does not use offset" inside the
worker and the whole engine dies. The batch's generator map now hands that bookkeeping an offset-less
view of CPU generators (sampling still uses the real ones), so a seeded request stays deterministic for
the same batch, though a discarded partial-prefill sample advances its stream (it would be rewound on a
GPU).
"""

from __future__ import annotations


class _OffsetlessView:
    """A CPU generator as the bookkeeping sees it: no offset to read or rewind."""

    def __init__(self, generator):
        self._generator = generator

    def get_offset(self) -> int:
        return 0

    def set_offset(self, offset: int) -> None:
        pass  # mt19937 has no offset; the discarded sample's draws stay consumed

    def __getattr__(self, name):
        return getattr(self._generator, name)


class _CpuGenerators(dict):
    """InputBatch.generators: `.get` (bookkeeping) returns offset-less views of CPU generators;
    iteration (the sampler) returns the generators themselves."""

    def get(self, key, default=None):
        generator = super().get(key, default)
        if generator is not None and getattr(generator, "device", None) is not None and generator.device.type == "cpu":
            return _OffsetlessView(generator)
        return generator


def install() -> None:
    from vllm.v1.worker import gpu_input_batch

    batch_cls = gpu_input_batch.InputBatch
    if getattr(batch_cls, "_cowest_patched", False):
        return
    original_init = batch_cls.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.generators = _CpuGenerators(self.generators)

    batch_cls.__init__ = __init__
    batch_cls._cowest_patched = True
