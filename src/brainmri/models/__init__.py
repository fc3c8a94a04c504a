"""The networks: building a backbone with the paper's head, the model card, and checkpoints."""
