"""Raw images in, labels out: the preprocessing a trained model carries with it."""
