"""Conversations as the model sees them: the rolling transcript, prompt formats (Relay's ChatML
and the instruct cards), question answering, and the Python API."""
