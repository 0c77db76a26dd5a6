"""The in-process transformers engine: loading, the memory check, the stepwise decode loop
and the prefix cache."""
