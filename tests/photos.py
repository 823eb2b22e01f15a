"""Small files a test makes: a folder of real photos (crops of scikit-learn's two sample images) and
seed 004's hand-built VGG16 layout with random weights, at full or reduced width."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import nn

POTATO = ("Early_blight", "Late_blight", "healthy")  # seed 000's PotatoPlants classes


def photo_folder(root: Path, classes: tuple[str, ...] = POTATO, per_class: int = 16, side: int = 48) -> Path:
    """root/<class>/<n>.JPG: crops of china.jpg and flower.jpg, a different region per class."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two 427x640 RGB photos, shipped with scikit-learn
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = photos[(c + i) % 2]
            top, left = (20 * c + 7 * i) % 220, (40 * c + 11 * i) % 430  # inside the 427x640 photo
            crop = img[top:top + 200, left:left + 200]
            Image.fromarray(crop).resize((side, side)).save(folder / f"{i:03d}.JPG", quality=90)
    return root


class Seed004VGG16(nn.Module):
    """Seed 004's hand-built VGG16, transcribed: blocks of Conv-ReLU, classifier without dropout.

    `div` divides every width (1 = the real model; 8 = a narrow twin for fast tests).
    """

    def __init__(self, classes: int = 3, div: int = 1, side: int = 7) -> None:
        super().__init__()

        def block(cin: int, cout: int, n: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i in range(n):
                layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU()]
            return nn.Sequential(*layers, nn.MaxPool2d(2, 2))

        w = [c // div for c in (64, 128, 256, 512, 512)]
        self.block1, self.block2 = block(3, w[0], 2), block(w[0], w[1], 2)
        self.block3, self.block4, self.block5 = block(w[1], w[2], 3), block(w[2], w[3], 3), block(w[3], w[4], 3)
        hidden = 4096 // div
        self.classifier = nn.Sequential(nn.Linear(w[4] * side * side, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                        nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in (self.block1, self.block2, self.block3, self.block4, self.block5):
            x = b(x)
        return self.classifier(torch.flatten(x, 1))


def save_seed004(path: Path, classes: int = 3, div: int = 8) -> Path:
    """A `best_model.pth` as seed 004 saves it: `torch.save(model.state_dict(), ...)`."""
    torch.manual_seed(0)
    torch.save(Seed004VGG16(classes, div).state_dict(), path)
    return path
