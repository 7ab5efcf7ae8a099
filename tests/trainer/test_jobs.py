"""Training-job plumbing that needs no training: micro-batching arguments, failure messages, retry backoff."""

from __future__ import annotations

from services.trainer.jobs import JobConfig, _common_args
from services.trainer.rounds import job_failure


def test_micro_batches_accumulate_to_the_batch():
    cfg = JobConfig(base_model_dir="m", data_file="d", output_dir="o", batch_size=4, micro_batch_size=2)
    args = _common_args(cfg)
    assert (args["per_device_train_batch_size"], args["gradient_accumulation_steps"]) == (2, 2)
    whole = _common_args(JobConfig(base_model_dir="m", data_file="d", output_dir="o", batch_size=4))
    assert (whole["per_device_train_batch_size"], whole["gradient_accumulation_steps"]) == (4, 1)


def test_a_killed_job_says_out_of_memory_in_one_line_without_progress_bars():
    log = (
        "Loading weights:   0%|          | 0/272 [00:00<?, ?it/s]\rLoading weights: 100%|##| 272/272 [00:00, 895.88it/s]\n"
        "Tokenizing train dataset: 100%|##| 6/6 [00:00<00:00, 187.96 examples/s]\n"
        "step 1 loss 0.69\n"
    )
    message = job_failure("dpo", -9, log)
    assert message == "dpo job failed with exit -9 (SIGKILL: most likely out of memory): step 1 loss 0.69"
    assert job_failure("sft", 1, "") == "sft job failed with exit 1"


def test_failed_automatic_rounds_back_off_doubling_and_reset_on_success():
    from services.trainer.app import FailureBackoff

    backoff = FailureBackoff(base_s=300, max_s=1000)
    assert not backoff.blocked("d", 0)
    assert backoff.record("d", "failed", now=0) == 300 and backoff.blocked("d", 299) and not backoff.blocked("d", 300)
    assert backoff.record("d", "failed", now=300) == 600 and backoff.blocked("d", 899)
    assert backoff.record("d", "failed", now=900) == 1000  # capped
    assert not backoff.blocked("other", 901)  # per domain
    assert backoff.record("d", "promoted", now=1900) == 0 and not backoff.blocked("d", 1900)
    assert backoff.record("d", "failed", now=2000) == 300  # the count restarted
