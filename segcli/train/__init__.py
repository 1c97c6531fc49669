"""Fine-tuning (`segcli train`): reserved for the training package."""
