"""Bird species identification by vector search: birder backbones, FAISS indexes, fused decisions."""

__version__ = "0.1.0"
