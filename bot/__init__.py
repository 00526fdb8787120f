"""Kling Video Bot: 2–4 images and a prompt in Discord, a Kling video back in a thread."""

__version__ = "0.1.0"
