"""End-to-end demos built on trlx (each a subpackage with its own data, rewards and report)."""
