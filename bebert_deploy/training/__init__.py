"""Training core: quantized fine-tuning, TWS, distillation, AdaBoost (needs torch)."""
