"""The trainer: collaborative feedback -> DPO LoRA adapters -> gated, versioned hot-swap with rollback.

- app.py        the service (FastAPI): /status, /adapters, /train, /adapters/{domain}/rollback, .../canary
- config.py     TrainerSettings (COWEST_TRAINER_*)
- collector.py  consumer group on the trace/feedback streams -> preference pairs
- collab.py     the collaboration path: strong alone, K drafts (n=K), refinements, scores
- evaluators.py task metrics per domain, strong-model judge
- pairs.py      Δ and the pairing rule
- store.py      pairs, rounds, held-out items in Redis
- jobs.py       DPO / SFT training jobs (trl + peft), run in their own process
- registry.py   immutable versioned adapter directories with manifests; validation
- swap.py       load -> verify -> flip alias -> retire; rollback; reconcile after vLLM restarts
- canary.py     canary releases: a gated version on a share of traffic, promoted or rolled back on live feedback
- rounds.py     one round: pairs -> DPO -> register -> gate -> swap (or a canary)
"""
