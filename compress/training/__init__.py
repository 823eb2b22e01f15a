"""Training: the one loop (baseline and fine-tuning), evaluation, resuming, knowledge distillation."""
