"""Data: the built-in and torchvision datasets, image folders, and the split every model is scored on."""
