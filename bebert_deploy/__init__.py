"""bebert-deploy: binary ensemble BERT (BEBERT) training, packed-bit export and edge runtime."""
__version__ = "0.1.0"
