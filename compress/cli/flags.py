"""Typed config dataclasses -> argparse flags, and the parsed flags -> configs again.

A compressor gets its command-line flags by declaring its config dataclass: one flag per
field, parsed by the field's type (bool: --x/--no-x, Literal: choices, tuple: comma list).
"""

from __future__ import annotations

import argparse
import math
import sys
import types
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal, Sequence, Union, get_args, get_origin, get_type_hints

from compress.configs import settings_of

HELP = {
    "dataset": "built-in or torchvision dataset: digits (default, offline), cifar10, fashion-mnist",
    "data": "ImageFolder root (one sub-folder of images per class); overrides --dataset",
    "data_root": "where torchvision datasets live",
    "download": "let torchvision download --dataset into --data-root (needs internet)",
    "image_size": "input side in pixels (>= 32; default 32, or 224 for --data folders)",
    "seed": "seed of the split, the initialisation and the data order",
    "test_fraction": "share of the images held out for test when the dataset has no official split",
    "val_fraction": "share of the training images used to pick the best epoch",
    "max_samples": "use a seeded subset of this many images (smoke tests)",
    "epochs": "training epochs",
    "lr": "Adam learning rate",
    "batch_size": "training batch size",
    "weight_decay": "Adam weight decay",
    "augment": "random shifts of up to 1/8 of the side on training images (no flips)",
    "schedule": "learning-rate schedule over the epochs",
    "warmup": "untimed calls before timing",
    "min_calls": "timed calls at least, per batch size",
    "max_calls": "timed calls at most, per batch size",
    "budget_s": "seconds of timing per batch size once --latency-min-calls are in",
    "batches": "batch sizes to time, comma-separated",
    "threads": "CPU threads for timing (default: all cores; recorded in every row)",
    "test_data": "with --data: a separate held-out folder (same class folders) that is the test split for every "
                 "model",
    "max_s": "seconds at most per runtime and batch size (at least 5 timed calls): keeps 224 px batch 32 practical",
    "require_quiet": "before timing, wait until other processes use under 10% of the CPU (fail after "
                     "--latency-quiet-timeout-s)",
    "quiet_timeout_s": "seconds --require-quiet waits for a quiet machine before it gives up",
    "strict": "fail on unreadable images in --data instead of skipping them with a warning",
}


SEARCH = "search_"  # where the search config's flags land in the namespace (its --epochs is not run all's)


# Flags people's scripts may still pass, and what replaced them: refused by name, never "unrecognized".
REMOVED = {
    "--no-latency-ort": "--runtimes without ort (e.g. --runtimes torch)",
    "--latency-ort": "--runtimes with ort in it (the default: --runtimes torch,ort)",
    "--no-latency-gpu": "--runtimes without cuda (e.g. --runtimes torch,ort)",
    "--latency-gpu": "--runtimes with cuda in it (e.g. --runtimes torch,ort,cuda)",
}


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        """A removed or renamed flag fails naming its replacement (before argparse calls it unrecognized)."""
        for arg in list(args or []):
            name = str(arg).split("=", 1)[0]
            if name in REMOVED:
                self.exit(2, f"{self.prog}: error: {name} was removed: use {REMOVED[name]}\n")
        return super().parse_args(args, namespace)


def unwrap_optional(t: Any) -> Any:
    if get_origin(t) in (Union, types.UnionType):
        args = [a for a in get_args(t) if a is not type(None)]
        return args[0] if len(args) == 1 else t
    return t


def finite_float(text: str) -> float:
    """A float flag: NaN and infinity are refused when the command line is read, not after hours of work."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def list_of(kind: type) -> Any:
    """A comma-separated list flag. An empty item is refused, not dropped: `--hidden ''` would otherwise build a
    head with no hidden layer and `1,,2` two layers, both without a word."""
    def parse(text: str) -> tuple[Any, ...]:
        items = text.split(",")
        if any(not v.strip() for v in items):
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}: "
                                             + ("an empty value" if not text.strip() else "an empty item"))
        try:
            return tuple((finite_float if kind is float else kind)(v) for v in items)
        except (ValueError, argparse.ArgumentTypeError):
            finite = " (finite numbers)" if kind is float else ""
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s{finite}, got {text!r}") from None
    parse.__name__ = f"list of {kind.__name__}"
    return parse


def points(text: str) -> float:
    """Points of accuracy a model or layer may lose: a finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 points of accuracy, got {text}")
    return value


def positive(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


PARSERS = {"points": points, "positive": positive}  # a field's metadata "parse": checked when the line is read


def _choice_list(choices: tuple[str, ...]) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in values if v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"invalid choice {','.join(bad) or text!r}: choose from {', '.join(choices)}")
        return values
    return parse


@dataclass(frozen=True)
class FlagStyle:
    """How one config's fields are spelled as flags: `--<prefix>name` into `ns.<dest_prefix>name`, fields
    skipped, defaults other than the config's, and (for `sweep`) comma-separated lists of values."""

    prefix: str = ""
    dest_prefix: str = ""
    skip: Sequence[str] = ()
    defaults: dict[str, Any] | None = None
    as_lists: bool = False


def add_config_flags(parser: argparse.ArgumentParser, cls: type, style: FlagStyle = FlagStyle()) -> None:
    """One flag per dataclass field; the type annotation decides how it is parsed.

    With `style.as_lists` (for `sweep`), every non-boolean flag takes comma-separated values.
    """
    prefix, dest_prefix, skip, defaults, as_lists = (style.prefix, style.dest_prefix, style.skip, style.defaults,
                                                     style.as_lists)
    hints = get_type_hints(cls)
    chosen = settings_of(cls)
    for f in fields(cls):
        if f.name in skip or f not in chosen:  # facts or set by the tool, not settings
            continue
        t = unwrap_optional(hints[f.name])
        flag = f.metadata.get("flag") or "--" + prefix + f.name.replace("_", "-")
        default = (defaults or {}).get(f.name, _default(f))
        described = f.metadata.get("help")  # a callable when the text is known only at run time (registered runtimes)
        kw: dict[str, Any] = {"dest": dest_prefix + f.name, "default": default, "metavar": f.name.upper(),
                              "help": (described() if callable(described) else described) or HELP.get(f.name, "")}
        if t is bool:
            kw["action"] = argparse.BooleanOptionalAction
            del kw["metavar"]
        elif as_lists and get_origin(t) is not tuple:  # tuple-valued fields (e.g. --hidden) stay fixed
            kw["default"] = default if isinstance(default, tuple) else (default,)
            kw["type"] = _choice_list(get_args(t)) if get_origin(t) is Literal else list_of(t)
            kw["help"] += " [comma-separated values are swept]"
        elif get_origin(t) is Literal:
            kw["choices"] = list(get_args(t))
            if "renamed" in f.metadata:  # old values still work: argparse checks choices after `type`
                kw["type"] = _renamed(flag, f.metadata["renamed"])
            del kw["metavar"]
        elif get_origin(t) is tuple:
            kw["type"] = list_of(get_args(t)[0])
        else:
            kw["type"] = PARSERS[f.metadata["parse"]] if "parse" in f.metadata else finite_float if t is float else t
        kw["help"] = kw["help"].replace("%", "%%")  # argparse %-formats help strings
        default = kw.get("default")
        if kw["help"] and default is not None and default is not False and default != ():
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            kw["help"] += f" (default {shown})"
        parser.add_argument(flag, **kw)


def _renamed(flag: str, renamed: dict[str, str]) -> Any:
    """A choice's old spelling, accepted with a one-line pointer to its new one (people's scripts call this tool)."""
    def parse(text: str) -> str:
        if text in renamed:
            print(f"note: {flag} {text} is now spelled {renamed[text]}", file=sys.stderr)
        return renamed.get(text, text)

    return parse


def _default(f: Any) -> Any:
    """A field's default, also when it comes from a factory (the runtimes timed by default are registered ones)."""
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def config_from(cls: type, ns: argparse.Namespace, dest_prefix: str = "", **fixed: Any) -> Any:
    values = {f.name: getattr(ns, dest_prefix + f.name) for f in fields(cls)
              if f.init and hasattr(ns, dest_prefix + f.name) and f.name not in fixed}
    return cls(**values, **fixed)
