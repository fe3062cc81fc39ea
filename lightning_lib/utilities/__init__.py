"""Utilities users import from Lightning's paths: rank-zero helpers, seeding, hyper-parameter dicts,
gradient norms, FLOP counting, moving tensors in collections (``pytorch_lightning.utilities``' names)."""

import torch

from lightning_lib.utilities.apply_func import move_data_to_device
from lightning_lib.utilities.combined_loader import CombinedLoader
from lightning_lib.utilities.data import suggested_max_num_workers
from lightning_lib.utilities.enums import GradClipAlgorithmType, LightningEnum
from lightning_lib.utilities.grads import grad_norm
from lightning_lib.utilities.parameter_tying import find_shared_parameters, set_shared_parameters
from lightning_lib.utilities.parsing import AttributeDict, is_picklable
from lightning_lib.utilities.rank_zero import (
    rank_zero_deprecation,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
)
from lightning_lib.utilities.throughput import measure_flops
from lightning_lib.utilities.warnings import disable_possible_user_warnings

FLOAT16_EPSILON = torch.finfo(torch.float16).eps
FLOAT32_EPSILON = torch.finfo(torch.float32).eps
FLOAT64_EPSILON = torch.finfo(torch.float64).eps

__all__ = [
    "FLOAT16_EPSILON",
    "FLOAT32_EPSILON",
    "FLOAT64_EPSILON",
    "AttributeDict",
    "CombinedLoader",
    "GradClipAlgorithmType",
    "LightningEnum",
    "disable_possible_user_warnings",
    "find_shared_parameters",
    "grad_norm",
    "is_picklable",
    "measure_flops",
    "move_data_to_device",
    "rank_zero_deprecation",
    "rank_zero_info",
    "rank_zero_only",
    "rank_zero_warn",
    "set_shared_parameters",
    "suggested_max_num_workers",
]
