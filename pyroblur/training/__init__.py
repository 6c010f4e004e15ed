"""Training with ultralytics: device and model resolution, resumable runs."""
