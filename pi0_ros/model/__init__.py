"""pi0 in PyTorch: SigLIP + Gemma (PaliGemma) with a Gemma action expert, flow matching, checkpoints.

ROS-free. One job per module:

- ``siglip``: SigLIP vision tower (HF names). ``gemma``: Gemma decoder, ``joint_forward`` (one joint
  attention over several experts' tokens), K/V cache. ``paligemma``: vision + projector + LM + tied head.
- ``config``: ``Pi0Config`` and the named configs ``pi0`` (full), ``pi0_tiny`` (simulator), ``pi0_test``.
- ``pi0``: ``Pi0Model`` with ``embed_prefix``, ``embed_suffix``, ``compute_loss``, ``prefill``,
  ``denoise_step(x_t, t, cache)`` (the per-step velocity, reusable for guidance such as RTC),
  ``sample_actions(inputs, noise=None)``; ``Pi0Inputs`` is the model-ready batch.
- ``image_transforms``, ``normalization``, ``action_transforms``, ``tokenizer``: pre/post-processing.
- ``checkpoint``: openpi/LeRobot weight loading with a ``LoadReport``; atomic checkpoint directories.
- ``policy``: ``Pi0Policy`` (the ``policy_api.Policy`` protocol). ``make_checkpoint``: CLI for random or
  imported checkpoints. ``random_inputs``: random weights/inputs for tests and benchmarks.

Driving the model from a script (e.g. an equivalence check against openpi/LeRobot)::

    model = build_model(get_pi0_config("pi0"), weights=load_file("model.safetensors"))
    actions = model.sample_actions(Pi0Inputs(images, image_masks, tokens, token_masks, state), noise=noise)
"""
