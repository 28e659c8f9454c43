"""GRPO from a checkpoint: the training loop and its arithmetic (advantages, clipped loss, k3 KL)."""
