"""Suite-wide settings.

Under pytest-xdist each worker is one process on a shared machine (CI: 2 cores, 2 workers): PyTorch's
default of one thread per core would oversubscribe the CPU and slow every training step ~10x, so each
worker — and the `dvc repro` subprocesses it starts — uses one thread.
"""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _clear_encryption_mode():
    """An encrypted stage switches this process to decrypting (dermdl.crypto.use_encrypted, an environment
    variable that its workers inherit); each test starts and ends in the clear mode, as each DVC stage does."""
    from dermdl import crypto

    os.environ.pop(crypto.MODE_ENV, None)
    yield
    os.environ.pop(crypto.MODE_ENV, None)
    crypto._process_key = None
