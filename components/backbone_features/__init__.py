"""BackboneFeatures: the frozen backbone over the images as a Beam step (training.beam_features)."""
