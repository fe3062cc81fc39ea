"""Telling out-of-memory errors apart and freeing cached device memory (Lightning's ``utilities.memory``).

The batch size finder halves the batch size on these errors and re-raises every other one; torch
reports them as a ``RuntimeError`` whose single argument carries the allocator's message.
"""

from __future__ import annotations

import gc

import torch


def _message(exception: BaseException) -> str | None:
    if (
        isinstance(exception, RuntimeError)
        and len(exception.args) == 1
        and isinstance(exception.args[0], str)
    ):
        return exception.args[0]
    return None


def is_cuda_out_of_memory(exception: BaseException) -> bool:
    """Whether ``exception`` is CUDA running out of memory (``torch.cuda.OutOfMemoryError`` included)."""
    message = _message(exception)
    return message is not None and "CUDA" in message and "out of memory" in message


def is_cudnn_snafu(exception: BaseException) -> bool:
    """Whether ``exception`` is cuDNN refusing a too large input (torch issue 4107), which means the same."""
    message = _message(exception)
    return message is not None and "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in message


def is_out_of_cpu_memory(exception: BaseException) -> bool:
    """Whether ``exception`` is the CPU allocator failing to allocate."""
    message = _message(exception)
    return message is not None and "DefaultCPUAllocator: can't allocate memory" in message


def is_oom_error(exception: BaseException) -> bool:
    """Whether ``exception`` means the batch did not fit in memory (CUDA, cuDNN or CPU)."""
    return is_cuda_out_of_memory(exception) or is_cudnn_snafu(exception) or is_out_of_cpu_memory(exception)


def garbage_collection_cuda() -> None:
    """Collect garbage and release the CUDA caching allocator's free blocks; an OOM while doing so is ignored."""
    gc.collect()
    try:
        torch.cuda.empty_cache()
    except RuntimeError as exception:
        if not is_oom_error(exception):
            raise


__all__ = [
    "garbage_collection_cuda",
    "is_cuda_out_of_memory",
    "is_cudnn_snafu",
    "is_oom_error",
    "is_out_of_cpu_memory",
]
