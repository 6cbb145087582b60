"""Bird species identification by vector search: birder backbones, FAISS indexes, fused decisions."""

import logging

__version__ = "0.1.0"

# torch says "No CUDA runtime is found" at WARNING when birder imports its C++ extension helper on a machine
# without CUDA: expected on a CPU deployment, printed by every gunicorn worker as it starts, and read as a fault.
# Errors from it still show. (The command line sets the same in identify.cli.base; this covers gunicorn.)
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
