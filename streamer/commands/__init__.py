"""The long-running commands behind the CLI: ``demo``, ``evaluate``, ``bench`` and teacher training."""
