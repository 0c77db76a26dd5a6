"""Operator commands: parsing them and carrying them out."""
