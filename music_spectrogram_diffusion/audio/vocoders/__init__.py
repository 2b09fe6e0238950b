"""Spectrogram -> audio: trainable Vocos and HiFi-GAN, Griffin-Lim fallback, SoundStream adapter.

Start with ``base.load_vocoder('griffin-lim' | MODEL_DIR | SAVED_MODEL_DIR)``. Trained generator
kinds ('vocos', 'hifigan') are listed in generators.py.
"""
