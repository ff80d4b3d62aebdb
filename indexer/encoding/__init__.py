"""Text to vectors: loading a model, encoding, pooling, the DeBERTa fast path, the offline e5 converter."""
