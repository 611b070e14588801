"""The command-line options shared by every command that embeds faces, as ``ModelOverrides``."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream.faces.models import ModelOverrides


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that embeds faces (they override config.yaml)."""
    group = parser.add_argument_group("model (overrides config.yaml's recognition section)")
    group.add_argument("--model", choices=["auto", "adaface", "facenet"], default=None)
    group.add_argument("--arch", choices=["ir_18", "ir_34", "ir_50", "ir_101", "ir_se_50"], default=None)
    group.add_argument("--checkpoint", type=Path, default=None, help="AdaFace checkpoint (.ckpt or state dict)")
    group.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    group.add_argument("--batch-size", type=int, default=None, help="crops per embedding batch")
    group.add_argument("--strict-model", action="store_true", help="fail (exit 2) instead of falling back to FaceNet")


def model_overrides(args: argparse.Namespace) -> ModelOverrides:
    """The parsed model options."""
    return ModelOverrides(
        model=args.model,
        arch=args.arch,
        checkpoint=args.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        strict=args.strict_model,
    )
