"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="module")
def torch_one_thread():
    """Small tensors gain nothing from intra-op threads, and on a shared 2-core machine thread hand-offs cost
    more than the work (the golden data was also produced on one thread)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
