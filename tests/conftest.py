import pytest
import torch


@pytest.fixture(autouse=True)
def _float32_default_and_seed():
    torch.manual_seed(0)
    yield
