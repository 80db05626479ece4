"""Files in, tensors out: image decoding, the manifest, atomic writes, the demo data."""
