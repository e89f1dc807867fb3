"""Small tensors run fastest on one thread, and CI shares its 2 cores with nothing useful."""

import torch

torch.set_num_threads(1)
