"""Text generation: the Engine protocol, the inference worker thread, model selection and
presets; `local` runs transformers in-process, `remote` talks to an inference server."""
