"""Process-level strategies (one device, or DDP over torch.distributed), the launcher and the cluster environment."""
