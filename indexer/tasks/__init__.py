"""Model jobs that never touch an index: embed, fill-mask, fine-tuning and classification."""
