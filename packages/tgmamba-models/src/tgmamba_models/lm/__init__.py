"""Mamba language model: config, backbone + LM head, generation with a recurrent cache, checkpoint I/O."""
