"""What the tests share, as plain modules (conftests hold only fixtures):

- servers.py        free ports, any ASGI app on real HTTP, real `vllm serve` processes, tiny LoRA adapters
- redis.py          a private redis-server a test can stop and restart
- fake_upstream.py  a scripted OpenAI-compatible upstream (429 / 500 / hang) for fault tests
- settings.py       orchestrator and trainer settings pointed at test servers
- memory.py         in-memory fakes (Redis subset, model servers) for fast unit tests
"""
