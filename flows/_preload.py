"""Imported by ``serve``'s forkserver before it forks the runs (``flows.deploy.SERVE_PRELOAD``): what a
run's end of fit would import after its last step, the way the MLflow logger imports it (MLflow's PyTorch
flavor without pytorch_lightning's autologging, torch's export, Pillow for the metric curves)."""

import torch._dynamo
import torch.export  # noqa: F401
from PIL import Image, ImageDraw  # noqa: F401

from lightning_lib.loggers.mlflow import import_pytorch_flavor

import_pytorch_flavor()
