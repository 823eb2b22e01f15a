"""Sensitivity: which layers a method hurts, scanned on the validation split (pruning, int8) and stored."""
