"""DataGate: stops a run before Transform when the data set cannot train a classifier."""
