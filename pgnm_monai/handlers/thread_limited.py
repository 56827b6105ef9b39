"""A :class:`~pgnm_monai.handlers.NoisePolicyHandler` whose CPU work runs on fewer threads (``policy_num_threads``)."""

from __future__ import annotations

import torch

from pgnm_monai.handlers.noise_policy import NoisePolicyHandler

__all__ = ["ThreadLimitedNoisePolicyHandler"]


class ThreadLimitedNoisePolicyHandler(NoisePolicyHandler):
    """A :class:`NoisePolicyHandler` whose CPU work runs with ``num_threads`` intra-op threads.

    The policy's step is hundreds of small operations; on a CPU shared with other processes each one
    pays an OpenMP barrier, which one thread avoids. The classifier keeps all
    threads: the limit is set at the start of each hook and restored at its end. No effect on the
    maths; on CUDA only the host-side work is affected.

    Args:
        num_threads: intra-op threads of the policy hooks (``torch.set_num_threads``).
        args: passed to :class:`NoisePolicyHandler`.
        kwargs: passed to :class:`NoisePolicyHandler`.
    """

    def __init__(self, *args, num_threads: int = 1, **kwargs) -> None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads!r}.")
        super().__init__(*args, **kwargs)
        self.num_threads = int(num_threads)

    def _limited(self, hook, engine):
        threads = torch.get_num_threads()
        if threads == self.num_threads:
            return hook(engine)
        torch.set_num_threads(self.num_threads)
        try:
            return hook(engine)
        finally:
            torch.set_num_threads(threads)

    def __call__(self, engine) -> None:
        self._limited(super().__call__, engine)

    def compute_policy_loss(self, engine) -> None:
        self._limited(super().compute_policy_loss, engine)

    def step_policy(self, engine) -> None:
        self._limited(super().step_policy, engine)
