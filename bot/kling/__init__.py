"""The CometAPI Kling multi-image-to-video API: models, client and error taxonomy."""
