"""Model provisioning for `cowest models pull`."""

from cowest.provision.pull import ModelPullError, PullResult, pull_model, pull_profile

__all__ = ["ModelPullError", "PullResult", "pull_model", "pull_profile"]
