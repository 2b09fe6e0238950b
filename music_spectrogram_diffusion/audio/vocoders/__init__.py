"""Spectrogram -> audio: trainable Vocos and HiFi-GAN, Griffin-Lim fallback, SoundStream adapters.

Start with ``base.load_vocoder('griffin-lim' | MODEL_DIR | SAVED_MODEL_DIR | MELGAN_DIR)``; the
SoundStream mel decoder runs as the original's SavedModel (soundstream.py) or as the PyTorch
port's ONNX export (melgan_onnx.py). Trained generator
kinds ('vocos', 'hifigan') are listed in generators.py.
"""
