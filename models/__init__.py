"""BERT with binary layers, quantizers and the BEBERT ensemble (needs torch)."""
