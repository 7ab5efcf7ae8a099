"""What the LoRA parity tests generate: prompts and how many greedy tokens."""

PROMPTS = ("The quick brown fox", "def parse(path):", "Return the JSON object", "A logger records events")
N_TOKENS = 12
