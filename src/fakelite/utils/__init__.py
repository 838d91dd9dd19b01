"""The bottom layer: progress bars, torch.distributed helpers, atomic file writes, module surgery and
determinism. Imports nothing from the rest of fakelite (tests/test_architecture.py enforces it)."""
