"""trlx: reinforcement learning from human feedback for causal language models."""
