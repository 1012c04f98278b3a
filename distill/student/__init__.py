"""The student model folder, once: what every stage after training reads it with.

- `files`: the names of the weights files inside a model folder (distill.json and
  calibration.json are named in distill.artifact, ensemble.npz in distill.ensemble).
- `heads`: finding the regression head, its live tensors and checksum, its check
  from the safetensors headers, and `verify_head` after a save.
- `load`: base-model resolution, quiet transformers, the decoder pad-token fix,
  `load_student` (the one loader) and `check_saved_weights`.
- `encode`: the student's tokenisation (`encode_texts`) and the one padding
  routine (`pad_sequences`, numpy, left or right), and both together (`encode_batch`).
- `predict`: standardised outputs batched by length (`predict_raw`) and 0-10
  scores (`predict_scores`).

Nothing here imports torch or transformers at module level.
"""
