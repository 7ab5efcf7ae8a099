"""The weak model server: real vLLM with LoRA adapters and runtime adapter loading.

- settings.py      how to launch vLLM (pydantic-settings, COWEST_WEAK_* / COWEST_STRONG_*)
- cpu_lora_fix.py  vLLM general plugin fixing base-model rows in CPU LoRA batches
- admin_client.py  typed client for vLLM's LoRA admin API, /v1/models and /health
"""
