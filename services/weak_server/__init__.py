"""The weak model server: real vLLM with LoRA adapters and runtime adapter loading.

- settings.py      how the weak vLLM server is launched (COWEST_WEAK_*; the vLLM argv is shared/vllm_launch.py)
- cpu_plugin/      vLLM general plugin: CPU LoRA ops (base rows get no delta, per-slot matmuls), seeded sampling
- admin_client.py  typed client for vLLM's LoRA admin API, /v1/models and /health
"""
