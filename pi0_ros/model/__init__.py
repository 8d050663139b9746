"""pi0 in PyTorch: SigLIP + Gemma (PaliGemma) with a Gemma action expert, flow matching, checkpoints.

ROS-free. Modules: ``siglip`` (vision tower), ``gemma`` (decoder + joint multi-expert attention),
``paligemma`` (vision + projector + LM), ``pi0`` (the flow-matching VLA), ``config`` (named configs).
"""
