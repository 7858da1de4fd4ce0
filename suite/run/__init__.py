"""Running jobs: profile expansion, protocol, the training loop, runner, attack stage, tracking, the check."""
