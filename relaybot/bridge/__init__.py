"""From IRC events to replies: routing events into transcripts, scheduling replies on the
worker, delivering them, and the per-channel state operators change."""
