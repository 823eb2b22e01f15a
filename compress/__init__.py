"""compress: measure what each compression method really buys a VGG16 classifier."""

__version__ = "0.1.0"
