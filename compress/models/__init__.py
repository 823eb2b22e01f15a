"""Models: the VGG spec and its builders, checkpoint formats (torchvision, seed 004, ours), ImageNet weights, the deployed artifact."""
