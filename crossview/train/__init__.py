"""Training: the symmetric InfoNCE loss, batch samplers, augmentations, the image cache and the loop."""
