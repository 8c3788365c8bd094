"""Image-folder datasets: discovery and validation, the decode-once cache, meta-features, transforms."""
