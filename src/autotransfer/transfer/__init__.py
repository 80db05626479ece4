"""What a transfer strategy is: one class per strategy, DANN's pieces, optimizers, augmentation."""
